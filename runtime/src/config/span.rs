//! Locating entities in the config text, so that every error can carry `file:line:col`.
//!
//! serde does not hand out positions of values, so this module runs a small scanner over the
//! RON source: it skips strings, raw strings and comments, tracks `(`/`[`/`{` groups, and
//! records `key: "string"` fields with the group they sit in. An *entity group* is a
//! parenthesised struct that is an element of a `backends`, `agents`, `workflows` or `tasks`
//! list; its `name` (or `id` for tasks) field names it.
//!
//! The scanner never fails: on text it cannot make sense of, lookups simply find nothing and
//! errors are reported without a position.

use std::fmt;

/// A 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// The kinds of entity a config declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    /// An element of `backends`.
    Backend,
    /// An element of `agents`.
    Agent,
    /// An element of `workflows`.
    Workflow,
    /// An element of a workflow's `tasks`.
    Task,
}

impl EntityKind {
    fn from_list_key(key: &str) -> Option<Self> {
        match key {
            "backends" => Some(EntityKind::Backend),
            "agents" => Some(EntityKind::Agent),
            "workflows" => Some(EntityKind::Workflow),
            "tasks" => Some(EntityKind::Task),
            _ => None,
        }
    }

    fn name_key(self) -> &'static str {
        match self {
            EntityKind::Task => "id",
            _ => "name",
        }
    }
}

#[derive(Debug, Clone)]
struct Group {
    open: usize,
    close: usize,
    parent: Option<usize>,
    /// The `key:` right before this group opened, if any.
    key: Option<String>,
}

#[derive(Debug, Clone)]
struct Field {
    key: String,
    value: String,
    offset: usize,
    group: usize,
}

/// An index of groups and string fields of one config text.
#[derive(Debug, Clone)]
pub struct SpanIndex {
    line_starts: Vec<usize>,
    text: String,
    groups: Vec<Group>,
    fields: Vec<Field>,
}

impl SpanIndex {
    /// Scans `text`.
    pub fn new(text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let mut index = SpanIndex {
            line_starts,
            text: text.to_owned(),
            groups: Vec::new(),
            fields: Vec::new(),
        };
        index.scan(text);
        index
    }

    /// Line and column of a byte offset.
    pub fn position(&self, offset: usize) -> Position {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let col = self
            .text
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(0)
            + 1;
        Position { line, col }
    }

    /// Byte offset of a line/column position (as RON reports them).
    pub fn offset(&self, pos: Position) -> usize {
        let Some(&start) = self.line_starts.get(pos.line.saturating_sub(1)) else {
            return self.text.len();
        };
        self.text[start..]
            .char_indices()
            .nth(pos.col.saturating_sub(1))
            .map(|(i, _)| start + i)
            .unwrap_or(self.text.len())
    }

    /// Position of the `name`/`id` field of the entity `kind` called `name`. For tasks, `scope`
    /// is the workflow name.
    pub fn locate(&self, kind: EntityKind, name: &str, scope: Option<&str>) -> Option<Position> {
        self.entity_groups(kind)
            .filter(|&g| {
                self.string_field(g, kind.name_key())
                    .map(|f| f.value.as_str())
                    == Some(name)
            })
            .find(|&g| match (kind, scope) {
                (EntityKind::Task, Some(wf)) => self
                    .enclosing_entity(g, EntityKind::Workflow)
                    .and_then(|w| self.string_field(w, "name"))
                    .is_some_and(|f| f.value == wf),
                _ => true,
            })
            .and_then(|g| self.string_field(g, kind.name_key()))
            .map(|f| self.position(f.offset))
    }

    /// Position of the first `key:` in the file (a runtime-wide section such as `scheduling`).
    pub fn locate_key(&self, key: &str) -> Option<Position> {
        let needle = format!("{key}:");
        let mut from = 0;
        while let Some(i) = self.text.get(from..)?.find(&needle) {
            let at = from + i;
            // A whole word: not the tail of `other_key:`.
            let before = self.text[..at].chars().next_back();
            if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                return Some(self.position(at));
            }
            from = at + needle.len();
        }
        None
    }

    /// Position of `key:` inside the entity, falling back to the entity itself.
    pub fn locate_field(
        &self,
        kind: EntityKind,
        name: &str,
        scope: Option<&str>,
        key: &str,
    ) -> Option<Position> {
        let pos = self.locate(kind, name, scope)?;
        let offset = self.offset(pos);
        let group = self.fields.iter().find(|f| f.offset == offset)?.group;
        let needle = format!("{key}:");
        let g = &self.groups[group];
        let body = self.text.get(g.open..g.close)?;
        match self.find_key_at_depth(body, &needle) {
            Some(i) => Some(self.position(g.open + i)),
            None => Some(pos),
        }
    }

    /// A description (`agent "planner"`, `task "repair/plan"`) of the innermost entity that
    /// contains `offset`, if any.
    pub fn entity_at(&self, offset: usize) -> Option<String> {
        let innermost = self
            .groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.open <= offset && offset <= g.close)
            .filter(|(i, _)| self.entity_kind(*i).is_some())
            .max_by_key(|(_, g)| g.open)
            .map(|(i, _)| i)?;
        let kind = self.entity_kind(innermost)?;
        let name = self
            .string_field(innermost, kind.name_key())
            .map(|f| f.value.clone())
            .unwrap_or_else(|| "?".into());
        Some(match kind {
            EntityKind::Task => {
                let wf = self
                    .enclosing_entity(innermost, EntityKind::Workflow)
                    .and_then(|w| self.string_field(w, "name"))
                    .map(|f| f.value.clone())
                    .unwrap_or_else(|| "?".into());
                format!("task \"{wf}/{name}\"")
            }
            EntityKind::Backend => format!("backend \"{name}\""),
            EntityKind::Agent => format!("agent \"{name}\""),
            EntityKind::Workflow => format!("workflow \"{name}\""),
        })
    }

    fn entity_kind(&self, group: usize) -> Option<EntityKind> {
        let g = &self.groups[group];
        if self.text.as_bytes().get(g.open) != Some(&b'(') {
            return None;
        }
        let parent = &self.groups[g.parent?];
        if self.text.as_bytes().get(parent.open) != Some(&b'[') {
            return None;
        }
        EntityKind::from_list_key(parent.key.as_deref()?)
    }

    fn entity_groups(&self, kind: EntityKind) -> impl Iterator<Item = usize> + '_ {
        (0..self.groups.len()).filter(move |&g| self.entity_kind(g) == Some(kind))
    }

    fn enclosing_entity(&self, mut group: usize, kind: EntityKind) -> Option<usize> {
        while let Some(p) = self.groups[group].parent {
            if self.entity_kind(p) == Some(kind) {
                return Some(p);
            }
            group = p;
        }
        None
    }

    fn string_field(&self, group: usize, key: &str) -> Option<&Field> {
        self.fields
            .iter()
            .find(|f| f.group == group && f.key == key)
    }

    /// Finds `needle` at nesting depth 1 of a group's text (its own fields).
    fn find_key_at_depth(&self, body: &str, needle: &str) -> Option<usize> {
        let mut depth = 0usize;
        let bytes = body.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth = depth.saturating_sub(1),
                b'"' => {
                    i = skip_string(bytes, i);
                    continue;
                }
                _ => {
                    if depth == 1 && body[i..].starts_with(needle) {
                        let before = i.checked_sub(1).map(|j| bytes[j]);
                        if !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
                            return Some(i);
                        }
                    }
                }
            }
            i += 1;
        }
        None
    }

    fn scan(&mut self, text: &str) {
        let bytes = text.as_bytes();
        let mut stack: Vec<usize> = Vec::new();
        let mut last_ident: Option<(String, usize)> = None;
        let mut pending_key: Option<String> = None;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match b {
                b'/' if bytes.get(i + 1) == Some(&b'/') => {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                    continue;
                }
                b'/' if bytes.get(i + 1) == Some(&b'*') => {
                    i += 2;
                    while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                        i += 1;
                    }
                    i += 2;
                    continue;
                }
                b'"' | b'r' if is_string_start(bytes, i) => {
                    let end = skip_string(bytes, i);
                    if let (Some(key), Some(&group)) = (pending_key.take(), stack.last()) {
                        let value = unquote(&text[i..end.min(text.len())]);
                        self.fields.push(Field {
                            key,
                            value,
                            offset: i,
                            group,
                        });
                    }
                    last_ident = None;
                    i = end;
                    continue;
                }
                b':' => {
                    pending_key = last_ident.take().map(|(s, _)| s);
                }
                b'(' | b'[' | b'{' => {
                    self.groups.push(Group {
                        open: i,
                        close: text.len(),
                        parent: stack.last().copied(),
                        key: pending_key.take(),
                    });
                    stack.push(self.groups.len() - 1);
                    last_ident = None;
                }
                b')' | b']' | b'}' => {
                    if let Some(g) = stack.pop() {
                        self.groups[g].close = i;
                    }
                    pending_key = None;
                    last_ident = None;
                }
                b if b.is_ascii_alphabetic() || b == b'_' => {
                    let start = i;
                    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_')
                    {
                        i += 1;
                    }
                    last_ident = Some((text[start..i].to_owned(), start));
                    continue;
                }
                b' ' | b'\t' | b'\r' | b'\n' => {}
                _ => {
                    if b != b',' {
                        pending_key = None;
                    }
                    last_ident = None;
                }
            }
            i += 1;
        }
    }
}

fn is_string_start(bytes: &[u8], i: usize) -> bool {
    match bytes[i] {
        b'"' => true,
        b'r' => {
            let prev_ident = i
                .checked_sub(1)
                .map(|j| bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_')
                .unwrap_or(false);
            if prev_ident {
                return false;
            }
            let mut j = i + 1;
            while bytes.get(j) == Some(&b'#') {
                j += 1;
            }
            bytes.get(j) == Some(&b'"')
        }
        _ => false,
    }
}

/// Returns the offset just past the string starting at `i` (plain or raw).
fn skip_string(bytes: &[u8], i: usize) -> usize {
    if bytes[i] == b'r' {
        let mut j = i + 1;
        let mut hashes = 0;
        while bytes.get(j) == Some(&b'#') {
            hashes += 1;
            j += 1;
        }
        j += 1; // opening quote
        while j < bytes.len() {
            if bytes[j] == b'"'
                && bytes[j + 1..]
                    .iter()
                    .take(hashes)
                    .filter(|&&b| b == b'#')
                    .count()
                    == hashes
            {
                return j + 1 + hashes;
            }
            j += 1;
        }
        return bytes.len();
    }
    let mut j = i + 1;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' => j += 2,
            b'"' => return j + 1,
            _ => j += 1,
        }
    }
    bytes.len()
}

fn unquote(s: &str) -> String {
    let s = s.trim_start_matches('r').trim_matches('#');
    let s = s.strip_prefix('"').unwrap_or(s);
    let s = s.strip_suffix('"').unwrap_or(s);
    s.replace("\\\"", "\"").replace("\\\\", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r##"(
    version: 1,
    // a comment with agents: [ (name: "ghost") ]
    backends: [ (name: "sim", kind: Sim(())) ],
    agents: [
        (name: "planner", role: "plans (carefully)", backend: "sim"),
        (
            role: r#"raw "quoted" role"#,
            name: "coder",
            backend: "gpt",
        ),
    ],
    workflows: [
        (name: "repair", tasks: [
            (id: "plan", agent: "planner"),
            (id: "fix", agent: "coder", depends_on: ["plan"]),
        ]),
    ],
)"##;

    #[test]
    fn locates_entities_by_kind_and_name() {
        let idx = SpanIndex::new(TEXT);
        assert_eq!(
            idx.locate(EntityKind::Agent, "planner", None),
            Some(Position { line: 6, col: 16 })
        );
        assert_eq!(
            idx.locate(EntityKind::Agent, "coder", None),
            Some(Position { line: 9, col: 19 })
        );
        assert_eq!(idx.locate(EntityKind::Agent, "ghost", None), None);
        assert_eq!(
            idx.locate(EntityKind::Backend, "sim", None),
            Some(Position { line: 4, col: 24 })
        );
        assert_eq!(
            idx.locate(EntityKind::Task, "fix", Some("repair")),
            Some(Position { line: 16, col: 18 })
        );
        assert_eq!(idx.locate(EntityKind::Task, "fix", Some("other")), None);
    }

    #[test]
    fn locates_fields_inside_entities() {
        let idx = SpanIndex::new(TEXT);
        assert_eq!(
            idx.locate_field(EntityKind::Agent, "coder", None, "backend"),
            Some(Position { line: 10, col: 13 })
        );
    }

    #[test]
    fn names_the_entity_around_an_offset() {
        let idx = SpanIndex::new(TEXT);
        let off = TEXT.find("depends_on").unwrap();
        assert_eq!(idx.entity_at(off).as_deref(), Some("task \"repair/fix\""));
        let off = TEXT.find("\"gpt\"").unwrap();
        assert_eq!(idx.entity_at(off).as_deref(), Some("agent \"coder\""));
        assert_eq!(idx.entity_at(3), None);
    }

    #[test]
    fn positions_round_trip() {
        let idx = SpanIndex::new(TEXT);
        for off in [0, 5, 40, 200] {
            assert_eq!(idx.offset(idx.position(off)), off);
        }
    }

    #[test]
    fn garbage_does_not_panic() {
        for text in [
            "",
            "(((",
            "\"unterminated",
            "r#\"x",
            "/* open",
            ")))]]",
            "name: : \"x\"",
        ] {
            let idx = SpanIndex::new(text);
            let _ = idx.entity_at(1);
            let _ = idx.locate(EntityKind::Agent, "x", None);
            let _ = idx.position(100);
        }
    }
}
