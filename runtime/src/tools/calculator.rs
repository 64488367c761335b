//! `calculator`: arithmetic through a real expression parser.
//!
//! The expression is tokenised, parsed by recursive descent into a small syntax tree, and the
//! tree is evaluated over `f64`. Nothing is ever handed to an interpreter.
//!
//! Grammar (lowest precedence first):
//!
//! ```text
//! expr    := term (('+' | '-') term)*
//! term    := unary (('*' | '/' | '%') unary)*
//! unary   := ('+' | '-') unary | power
//! power   := primary ('^' unary)?            right-associative; -2^2 = -(2^2)
//! primary := number | constant | function '(' expr (',' expr)* ')' | '(' expr ')'
//! ```
//!
//! Functions: `sqrt abs ln log10 exp sin cos tan floor ceil round` (one argument, angles in
//! radians) and `min max` (two arguments). Constants: `pi`, `e`. Input is capped at
//! [`MAX_INPUT_CHARS`] characters and [`MAX_DEPTH`] levels of nesting, so no input can overflow
//! the stack. Every error names a 1-based character position.
use futures::future::BoxFuture;
use serde_json::json;

use super::{arg_str, Tool, ToolContext, ToolError, ToolOutput};
use crate::llm::ToolSpec;

/// Longest expression accepted, in characters.
pub const MAX_INPUT_CHARS: usize = 1000;
/// Deepest nesting accepted (parentheses, unary signs, powers and function arguments).
pub const MAX_DEPTH: usize = 64;

/// The `calculator` tool.
///
/// Arguments: `{"expression": string}`. Result data: `{"expression": string, "value": number}`.
#[derive(Debug, Clone, Copy)]
pub struct Calculator;

impl Tool for Calculator {
    fn class(&self) -> crate::durable::SideEffect {
        crate::durable::SideEffect::Pure
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "calculator".into(),
            description: "Evaluate an arithmetic expression: numbers, + - * / % ^, parentheses, \
                          sqrt abs ln log10 exp sin cos tan floor ceil round min max, pi, e."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "expression": {
                        "type": "string",
                        "description": "The expression, e.g. \"(2 + 3) * sqrt(16) ^ 2\". Angles in radians.",
                        "maxLength": MAX_INPUT_CHARS
                    }
                },
                "required": ["expression"],
                "additionalProperties": false
            }),
        }
    }

    fn call(
        &self,
        _ctx: &ToolContext,
        args: serde_json::Value,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
        let result = arg_str(&args, "expression").and_then(|expr| {
            let value = evaluate(expr).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
            Ok(ToolOutput {
                content: format_value(value),
                data: json!({"expression": expr, "value": value}),
            })
        });
        Box::pin(async move { result })
    }
}

/// Why an expression could not be evaluated. Positions are 1-based character indices.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalcError {
    /// The expression is empty or only whitespace.
    #[error("empty expression")]
    Empty,
    /// The expression is longer than [`MAX_INPUT_CHARS`].
    #[error("expression is {0} characters long; the limit is {MAX_INPUT_CHARS}")]
    TooLong(usize),
    /// The expression nests deeper than [`MAX_DEPTH`].
    #[error("expression nested too deeply at position {0} (limit {MAX_DEPTH} levels)")]
    TooDeep(usize),
    /// A character that is not part of the language.
    #[error("unexpected character `{ch}` at position {pos}")]
    UnexpectedChar {
        /// The character.
        ch: char,
        /// Its position.
        pos: usize,
    },
    /// A token where another was expected.
    #[error("expected {expected} at position {pos}, found {found}")]
    Unexpected {
        /// What the parser wanted.
        expected: &'static str,
        /// What it got.
        found: String,
        /// Where.
        pos: usize,
    },
    /// A `(` without its `)`.
    #[error("unclosed `(` at position {0}")]
    UnclosedParen(usize),
    /// A `)` without its `(`.
    #[error("unmatched `)` at position {0}")]
    UnmatchedParen(usize),
    /// A malformed or out-of-range number literal.
    #[error("invalid number `{text}` at position {pos}")]
    BadNumber {
        /// The literal.
        text: String,
        /// Its position.
        pos: usize,
    },
    /// A name that is neither a constant nor a function.
    #[error("unknown identifier `{name}` at position {pos}")]
    UnknownIdent {
        /// The name.
        name: String,
        /// Its position.
        pos: usize,
    },
    /// A function name used without an argument list.
    #[error("function `{name}` at position {pos} needs arguments, e.g. `{name}(x)`")]
    MissingCall {
        /// The function.
        name: String,
        /// Its position.
        pos: usize,
    },
    /// A constant called like a function.
    #[error("`{name}` at position {pos} is a constant, not a function")]
    NotAFunction {
        /// The constant.
        name: String,
        /// Its position.
        pos: usize,
    },
    /// A function called with the wrong number of arguments.
    #[error("function `{name}` at position {pos} takes {expected} argument(s), got {got}")]
    Arity {
        /// The function.
        name: &'static str,
        /// How many it takes.
        expected: usize,
        /// How many it got.
        got: usize,
        /// Its position.
        pos: usize,
    },
    /// `x / 0`.
    #[error("division by zero at position {0}")]
    DivisionByZero(usize),
    /// `x % 0`.
    #[error("modulo by zero at position {0}")]
    ModuloByZero(usize),
    /// An operation produced infinity or NaN.
    #[error("{what} at position {pos} gives a non-finite result")]
    NonFinite {
        /// The operator or function.
        what: String,
        /// Its position.
        pos: usize,
    },
}

/// Parses and evaluates `input`.
pub fn evaluate(input: &str) -> Result<f64, CalcError> {
    let len = input.chars().count();
    if len > MAX_INPUT_CHARS {
        return Err(CalcError::TooLong(len));
    }
    let tokens = tokenize(input)?;
    if tokens.is_empty() {
        return Err(CalcError::Empty);
    }
    let mut parser = Parser {
        tokens: &tokens,
        next: 0,
        depth: 0,
        end: len + 1,
    };
    let ast = parser.expr()?;
    if let Some(tok) = parser.peek() {
        return Err(match tok.kind {
            TokKind::RParen => CalcError::UnmatchedParen(tok.pos),
            _ => CalcError::Unexpected {
                expected: "an operator",
                found: tok.kind.describe(),
                pos: tok.pos,
            },
        });
    }
    eval(&ast)
}

/// Formats a value for the model: exact integers below 1e15 without a fraction, very large or
/// very small magnitudes in exponent form, everything else in the shortest exact decimal.
pub fn format_value(v: f64) -> String {
    let abs = v.abs();
    if v.fract() == 0.0 && abs < 1e15 {
        // Exact integer below 1e15, so the cast is lossless.
        format!("{}", v as i64)
    } else if abs >= 1e15 || (abs != 0.0 && abs < 1e-6) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

#[derive(Debug, Clone, PartialEq)]
enum TokKind {
    Num(f64),
    Ident(String),
    Op(char),
    LParen,
    RParen,
    Comma,
}

impl TokKind {
    fn describe(&self) -> String {
        match self {
            TokKind::Num(n) => format!("number `{}`", format_value(*n)),
            TokKind::Ident(s) => format!("`{s}`"),
            TokKind::Op(c) => format!("`{c}`"),
            TokKind::LParen => "`(`".into(),
            TokKind::RParen => "`)`".into(),
            TokKind::Comma => "`,`".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    kind: TokKind,
    /// 1-based character position.
    pos: usize,
}

fn tokenize(input: &str) -> Result<Vec<Token>, CalcError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let pos = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let kind = if c.is_ascii_digit() || c == '.' {
            let start = i;
            while chars
                .get(i)
                .is_some_and(|c| c.is_ascii_digit() || *c == '.')
            {
                i += 1;
            }
            // An exponent only if `e` is followed by digits (optionally signed); otherwise the
            // `e` is left for the next token and reported there.
            if matches!(chars.get(i), Some('e' | 'E')) {
                let mut j = i + 1;
                if matches!(chars.get(j), Some('+' | '-')) {
                    j += 1;
                }
                if chars.get(j).is_some_and(char::is_ascii_digit) {
                    i = j;
                    while chars.get(i).is_some_and(char::is_ascii_digit) {
                        i += 1;
                    }
                }
            }
            let text: String = chars[start..i].iter().collect();
            match text.parse::<f64>() {
                Ok(n) if n.is_finite() => TokKind::Num(n),
                _ => return Err(CalcError::BadNumber { text, pos }),
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while chars
                .get(i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
            {
                i += 1;
            }
            TokKind::Ident(chars[start..i].iter().collect())
        } else {
            i += 1;
            match c {
                '+' | '-' | '*' | '/' | '%' | '^' => TokKind::Op(c),
                '(' => TokKind::LParen,
                ')' => TokKind::RParen,
                ',' => TokKind::Comma,
                _ => return Err(CalcError::UnexpectedChar { ch: c, pos }),
            }
        };
        tokens.push(Token { kind, pos });
    }
    Ok(tokens)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Func {
    Sqrt,
    Abs,
    Ln,
    Log10,
    Exp,
    Sin,
    Cos,
    Tan,
    Floor,
    Ceil,
    Round,
    Min,
    Max,
}

impl Func {
    fn lookup(name: &str) -> Option<Func> {
        Some(match name {
            "sqrt" => Func::Sqrt,
            "abs" => Func::Abs,
            "ln" => Func::Ln,
            "log10" => Func::Log10,
            "exp" => Func::Exp,
            "sin" => Func::Sin,
            "cos" => Func::Cos,
            "tan" => Func::Tan,
            "floor" => Func::Floor,
            "ceil" => Func::Ceil,
            "round" => Func::Round,
            "min" => Func::Min,
            "max" => Func::Max,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Func::Sqrt => "sqrt",
            Func::Abs => "abs",
            Func::Ln => "ln",
            Func::Log10 => "log10",
            Func::Exp => "exp",
            Func::Sin => "sin",
            Func::Cos => "cos",
            Func::Tan => "tan",
            Func::Floor => "floor",
            Func::Ceil => "ceil",
            Func::Round => "round",
            Func::Min => "min",
            Func::Max => "max",
        }
    }

    fn arity(self) -> usize {
        match self {
            Func::Min | Func::Max => 2,
            _ => 1,
        }
    }

    fn apply(self, args: &[f64]) -> f64 {
        let a = args.first().copied().unwrap_or(f64::NAN);
        let b = args.get(1).copied().unwrap_or(f64::NAN);
        match self {
            Func::Sqrt => a.sqrt(),
            Func::Abs => a.abs(),
            Func::Ln => a.ln(),
            Func::Log10 => a.log10(),
            Func::Exp => a.exp(),
            Func::Sin => a.sin(),
            Func::Cos => a.cos(),
            Func::Tan => a.tan(),
            Func::Floor => a.floor(),
            Func::Ceil => a.ceil(),
            Func::Round => a.round(),
            Func::Min => a.min(b),
            Func::Max => a.max(b),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Ast {
    Num(f64),
    Neg(Box<Ast>),
    Bin {
        op: char,
        pos: usize,
        lhs: Box<Ast>,
        rhs: Box<Ast>,
    },
    Call {
        func: Func,
        pos: usize,
        args: Vec<Ast>,
    },
}

struct Parser<'a> {
    tokens: &'a [Token],
    next: usize,
    depth: usize,
    /// Position reported for "end of input".
    end: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn bump(&mut self) -> Option<Token> {
        let tok = self.tokens.get(self.next).cloned();
        if tok.is_some() {
            self.next += 1;
        }
        tok
    }

    fn peek_op(&self, ops: &[char]) -> Option<(char, usize)> {
        match self.peek() {
            Some(Token {
                kind: TokKind::Op(c),
                pos,
            }) if ops.contains(c) => Some((*c, *pos)),
            _ => None,
        }
    }

    fn expr(&mut self) -> Result<Ast, CalcError> {
        let mut lhs = self.term()?;
        while let Some((op, pos)) = self.peek_op(&['+', '-']) {
            self.next += 1;
            let rhs = self.term()?;
            lhs = Ast::Bin {
                op,
                pos,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            };
        }
        Ok(lhs)
    }

    fn term(&mut self) -> Result<Ast, CalcError> {
        let mut lhs = self.unary()?;
        while let Some((op, pos)) = self.peek_op(&['*', '/', '%']) {
            self.next += 1;
            let rhs = self.unary()?;
            lhs = Ast::Bin {
                op,
                pos,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            };
        }
        Ok(lhs)
    }

    /// Every recursive path goes through here, so this is where depth is counted.
    fn unary(&mut self) -> Result<Ast, CalcError> {
        let pos = self.peek().map_or(self.end, |t| t.pos);
        if self.depth >= MAX_DEPTH {
            return Err(CalcError::TooDeep(pos));
        }
        self.depth += 1;
        let result = self.unary_inner();
        self.depth -= 1;
        result
    }

    fn unary_inner(&mut self) -> Result<Ast, CalcError> {
        if let Some((op, _)) = self.peek_op(&['+', '-']) {
            self.next += 1;
            let operand = self.unary()?;
            return Ok(if op == '-' {
                Ast::Neg(Box::new(operand))
            } else {
                operand
            });
        }
        let base = self.primary()?;
        if let Some((op, pos)) = self.peek_op(&['^']) {
            self.next += 1;
            let exponent = self.unary()?;
            return Ok(Ast::Bin {
                op,
                pos,
                lhs: Box::new(base),
                rhs: Box::new(exponent),
            });
        }
        Ok(base)
    }

    fn primary(&mut self) -> Result<Ast, CalcError> {
        let Some(tok) = self.bump() else {
            return Err(CalcError::Unexpected {
                expected: "a number, name or `(`",
                found: "the end of the expression".into(),
                pos: self.end,
            });
        };
        match tok.kind {
            TokKind::Num(n) => Ok(Ast::Num(n)),
            TokKind::LParen => {
                let inner = self.expr()?;
                self.close_paren(tok.pos)?;
                Ok(inner)
            }
            TokKind::Ident(name) => self.ident(name, tok.pos),
            TokKind::RParen if self.next == 1 => Err(CalcError::UnmatchedParen(tok.pos)),
            other => Err(CalcError::Unexpected {
                expected: "a number, name or `(`",
                found: other.describe(),
                pos: tok.pos,
            }),
        }
    }

    fn close_paren(&mut self, open_pos: usize) -> Result<(), CalcError> {
        match self.bump() {
            Some(Token {
                kind: TokKind::RParen,
                ..
            }) => Ok(()),
            None => Err(CalcError::UnclosedParen(open_pos)),
            Some(tok) => Err(CalcError::Unexpected {
                expected: "`)` or an operator",
                found: tok.kind.describe(),
                pos: tok.pos,
            }),
        }
    }

    fn ident(&mut self, name: String, pos: usize) -> Result<Ast, CalcError> {
        let called = matches!(
            self.peek(),
            Some(Token {
                kind: TokKind::LParen,
                ..
            })
        );
        let constant = match name.as_str() {
            "pi" => Some(std::f64::consts::PI),
            "e" => Some(std::f64::consts::E),
            _ => None,
        };
        if let Some(value) = constant {
            return if called {
                Err(CalcError::NotAFunction { name, pos })
            } else {
                Ok(Ast::Num(value))
            };
        }
        let Some(func) = Func::lookup(&name) else {
            return Err(CalcError::UnknownIdent { name, pos });
        };
        if !called {
            return Err(CalcError::MissingCall { name, pos });
        }
        let open_pos = self.peek().map_or(pos, |t| t.pos);
        self.next += 1;
        let mut args = Vec::new();
        if !matches!(
            self.peek(),
            Some(Token {
                kind: TokKind::RParen,
                ..
            })
        ) {
            loop {
                args.push(self.expr()?);
                if matches!(
                    self.peek(),
                    Some(Token {
                        kind: TokKind::Comma,
                        ..
                    })
                ) {
                    self.next += 1;
                } else {
                    break;
                }
            }
        }
        self.close_paren(open_pos)?;
        if args.len() != func.arity() {
            return Err(CalcError::Arity {
                name: func.name(),
                expected: func.arity(),
                got: args.len(),
                pos,
            });
        }
        Ok(Ast::Call { func, pos, args })
    }
}

fn eval(ast: &Ast) -> Result<f64, CalcError> {
    match ast {
        Ast::Num(n) => Ok(*n),
        Ast::Neg(inner) => Ok(-eval(inner)?),
        Ast::Bin { op, pos, lhs, rhs } => {
            let (a, b) = (eval(lhs)?, eval(rhs)?);
            let v = match op {
                '+' => a + b,
                '-' => a - b,
                '*' => a * b,
                '/' if b == 0.0 => return Err(CalcError::DivisionByZero(*pos)),
                '/' => a / b,
                '%' if b == 0.0 => return Err(CalcError::ModuloByZero(*pos)),
                '%' => a % b,
                _ => a.powf(b),
            };
            finite(v, || format!("`{op}`"), *pos)
        }
        Ast::Call { func, pos, args } => {
            let values = args.iter().map(eval).collect::<Result<Vec<_>, _>>()?;
            finite(func.apply(&values), || format!("`{}`", func.name()), *pos)
        }
    }
}

fn finite(v: f64, what: impl FnOnce() -> String, pos: usize) -> Result<f64, CalcError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(CalcError::NonFinite { what: what(), pos })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(expr: &str) -> f64 {
        match evaluate(expr) {
            Ok(v) => v,
            Err(e) => panic!("`{expr}` failed: {e}"),
        }
    }

    fn err(expr: &str) -> CalcError {
        match evaluate(expr) {
            Ok(v) => panic!("`{expr}` gave {v}, expected an error"),
            Err(e) => e,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn numbers() {
        assert_eq!(ok("42"), 42.0);
        assert_eq!(ok("3.25"), 3.25);
        assert_eq!(ok(".5"), 0.5);
        assert_eq!(ok("1e3"), 1000.0);
        assert_eq!(ok("2.5E-2"), 0.025);
        assert_eq!(ok("1e+2"), 100.0);
        assert_eq!(ok("  7  "), 7.0);
    }

    #[test]
    fn precedence() {
        assert_eq!(ok("2 + 3 * 4"), 14.0);
        assert_eq!(ok("(2 + 3) * 4"), 20.0);
        assert_eq!(ok("10 - 4 / 2"), 8.0);
        assert_eq!(ok("2 * 3 ^ 2"), 18.0);
        assert_eq!(ok("7 % 4 + 1"), 4.0);
        assert_eq!(ok("1 + 2 * 3 - 4 / 2 ^ 2"), 6.0);
    }

    #[test]
    fn associativity() {
        assert_eq!(ok("10 - 3 - 2"), 5.0);
        assert_eq!(ok("64 / 4 / 2"), 8.0);
        assert_eq!(ok("2 ^ 3 ^ 2"), 512.0);
        assert_eq!(ok("17 % 10 % 4"), 3.0);
    }

    #[test]
    fn unary_operators() {
        assert_eq!(ok("-3"), -3.0);
        assert_eq!(ok("+3"), 3.0);
        assert_eq!(ok("--3"), 3.0);
        assert_eq!(ok("-2 ^ 2"), -4.0);
        assert_eq!(ok("2 ^ -1"), 0.5);
        assert_eq!(ok("3 * -2"), -6.0);
        assert_eq!(ok("-(1 + 2)"), -3.0);
        assert_eq!(ok("-7 % 3"), -1.0);
    }

    #[test]
    fn functions_and_constants() {
        assert_eq!(ok("sqrt(16)"), 4.0);
        assert_eq!(ok("abs(-2.5)"), 2.5);
        assert!(close(ok("ln(e)"), 1.0));
        assert_eq!(ok("log10(1000)"), 3.0);
        assert_eq!(ok("exp(0)"), 1.0);
        assert!(close(ok("sin(pi / 2)"), 1.0));
        assert!(close(ok("cos(pi)"), -1.0));
        assert!(close(ok("tan(0)"), 0.0));
        assert_eq!(ok("floor(-2.5)"), -3.0);
        assert_eq!(ok("ceil(2.1)"), 3.0);
        assert_eq!(ok("round(2.5)"), 3.0);
        assert_eq!(ok("min(3, -1)"), -1.0);
        assert_eq!(ok("max(3, 2 * 4)"), 8.0);
        assert_eq!(ok("sqrt(max(9, 4)) ^ 2"), 9.0);
    }

    #[test]
    fn errors_carry_positions() {
        assert_eq!(err("2 $ 3"), CalcError::UnexpectedChar { ch: '$', pos: 3 });
        assert_eq!(err("(1 + 2"), CalcError::UnclosedParen(1));
        assert_eq!(err("1 + 2)"), CalcError::UnmatchedParen(6));
        assert_eq!(err(")"), CalcError::UnmatchedParen(1));
        assert_eq!(
            err("2 * foo"),
            CalcError::UnknownIdent {
                name: "foo".into(),
                pos: 5
            }
        );
        assert_eq!(
            err("min(1)"),
            CalcError::Arity {
                name: "min",
                expected: 2,
                got: 1,
                pos: 1
            }
        );
        assert_eq!(
            err("sqrt(1, 2)"),
            CalcError::Arity {
                name: "sqrt",
                expected: 1,
                got: 2,
                pos: 1
            }
        );
        assert!(matches!(err("sqrt()"), CalcError::Arity { got: 0, .. }));
        assert_eq!(err("1 / 0"), CalcError::DivisionByZero(3));
        assert_eq!(err("5 % (2 - 2)"), CalcError::ModuloByZero(3));
        assert!(matches!(
            err("sqrt(-1)"),
            CalcError::NonFinite { pos: 1, .. }
        ));
        assert!(matches!(
            err("10 ^ 400"),
            CalcError::NonFinite { pos: 4, .. }
        ));
        assert!(matches!(err("ln(0)"), CalcError::NonFinite { .. }));
        assert!(matches!(err("1e999"), CalcError::BadNumber { pos: 1, .. }));
        assert!(matches!(err("1.2.3"), CalcError::BadNumber { .. }));
        assert_eq!(err(""), CalcError::Empty);
        assert_eq!(err("   "), CalcError::Empty);
    }

    #[test]
    fn syntax_errors() {
        assert!(matches!(err("1 +"), CalcError::Unexpected { pos: 4, .. }));
        assert!(matches!(err("1 2"), CalcError::Unexpected { pos: 3, .. }));
        assert!(matches!(err("* 2"), CalcError::Unexpected { pos: 1, .. }));
        assert!(matches!(err("()"), CalcError::Unexpected { pos: 2, .. }));
        assert!(matches!(err("2e"), CalcError::Unexpected { pos: 2, .. }));
        assert!(matches!(err("(1 2)"), CalcError::Unexpected { pos: 4, .. }));
        assert!(matches!(err("sqrt"), CalcError::MissingCall { .. }));
        assert!(matches!(err("pi(2)"), CalcError::NotAFunction { .. }));
        assert!(matches!(err("min(1,)"), CalcError::Unexpected { .. }));
        assert!(matches!(err("sqrt(4"), CalcError::UnclosedParen(5)));
        let msg = err("2 $ 3").to_string();
        assert_eq!(msg, "unexpected character `$` at position 3");
    }

    #[test]
    fn syntax_errors_win_over_evaluation_errors() {
        assert!(matches!(
            err("1 / 0 +"),
            CalcError::Unexpected { pos: 8, .. }
        ));
    }

    #[test]
    fn depth_limit() {
        let ok_depth = format!(
            "{}1{}",
            "(".repeat(MAX_DEPTH - 1),
            ")".repeat(MAX_DEPTH - 1)
        );
        assert_eq!(ok(&ok_depth), 1.0);
        let too_deep = format!("{}1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(matches!(err(&too_deep), CalcError::TooDeep(_)));
        assert!(matches!(err(&"-".repeat(500)), CalcError::TooDeep(_)));
        assert!(matches!(
            err(&format!("{}1", "2^".repeat(400))),
            CalcError::TooDeep(_)
        ));
        assert!(matches!(
            err(&format!("{}1{}", "sqrt(".repeat(100), ")".repeat(100))),
            CalcError::TooDeep(_)
        ));
        // Long flat chains are not nesting.
        assert_eq!(ok(&vec!["1"; 500].join("+")), 500.0);
    }

    #[test]
    fn length_limit() {
        let long = "1+".repeat(MAX_INPUT_CHARS / 2) + "1";
        assert_eq!(err(&long), CalcError::TooLong(MAX_INPUT_CHARS + 1));
    }

    #[test]
    fn formatting() {
        assert_eq!(format_value(14.0), "14");
        assert_eq!(format_value(-0.0), "0");
        assert_eq!(format_value(0.5), "0.5");
        assert_eq!(format_value(-2.25), "-2.25");
        assert_eq!(format_value(1e20), "1e20");
        assert_eq!(format_value(123456789012345.0), "123456789012345");
        assert_eq!(format_value(1e-9), "1e-9");
    }

    #[test]
    fn arbitrary_input_never_panics() {
        for s in [
            "((((",
            "))))",
            "^^^",
            "1^",
            "-",
            "min(,)",
            "max(1,2,3)",
            "é",
            "1e",
            "e1",
            ".",
            "..",
            "_",
            "1 ,2",
            "(,)",
            "\u{0}",
            "sqrt(-0)",
            "0/0",
            "0%0",
        ] {
            let _ = evaluate(s);
        }
    }

    #[tokio::test]
    async fn tool_call() {
        let ctx = crate::tools::test_support::context(None);
        let out = Calculator
            .call(&ctx, json!({"expression": "(2 + 3) * 4"}))
            .await
            .unwrap();
        assert_eq!(out.content, "20");
        assert_eq!(
            out.data,
            json!({"expression": "(2 + 3) * 4", "value": 20.0})
        );

        let e = Calculator
            .call(&ctx, json!({"expression": "1/0"}))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            ToolError::InvalidArguments("division by zero at position 2".into())
        );
        let e = Calculator.call(&ctx, json!({})).await.unwrap_err();
        assert!(matches!(e, ToolError::InvalidArguments(m) if m.contains("expression")));
        let e = Calculator
            .call(&ctx, json!({"expression": 5}))
            .await
            .unwrap_err();
        assert!(matches!(e, ToolError::InvalidArguments(_)));
        assert_eq!(
            Calculator.spec().parameters["required"],
            json!(["expression"])
        );
    }
}
