"""LangGraph side of the `frameworks` scenario of `agentos-bench`.

N requests, each a tool-using prompt answered in two LLM turns (a calculator call, then the
answer), all submitted at once with asyncio.gather, against an OpenAI-compatible server
(`agentos sim-server`). Prints one JSON sample on stdout with the same fields as the Rust side:
wall time, steps, tasks, latencies, peak RSS of this process and the CPU time of the
workload (imports excluded).
"""

import argparse
import ast
import asyncio
import json
import math
import operator
import time

from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.prebuilt import create_react_agent

OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def evaluate(node):
    """Arithmetic only: numbers and operators, never arbitrary code."""
    if isinstance(node, ast.Expression):
        return evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in OPS:
        return OPS[type(node.op)](evaluate(node.left), evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in OPS:
        return OPS[type(node.op)](evaluate(node.operand))
    raise ValueError("unsupported expression")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression: numbers, + - * / % ^ and parentheses."""
    try:
        value = evaluate(ast.parse(expression.replace("^", "**"), mode="eval"))
    except (ValueError, SyntaxError, ZeroDivisionError) as e:
        return f"error: {e}"
    return str(value)


def prompt(i):
    """The same prompts as the Rust side (benches/src/workload.rs `input`)."""
    return f"({i + 1} * 7) + {i % 13}"


def peak_rss_bytes():
    """VmHWM of this process (ru_maxrss would include the parent's size, carried over exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def percentiles(secs):
    if not secs:
        return {"count": 0, "mean_ms": 0.0, "p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0}
    s = sorted(secs)

    def rank(q):
        i = min(max(math.ceil(q * len(s)), 1), len(s)) - 1
        return s[i] * 1e3

    return {
        "count": len(s),
        "mean_ms": sum(s) / len(s) * 1e3,
        "p50_ms": rank(0.50),
        "p95_ms": rank(0.95),
        "p99_ms": rank(0.99),
    }


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--requests", type=int, required=True)
    args = parser.parse_args()

    llm = ChatOpenAI(
        model="agentos-simulator",
        base_url=args.base_url,
        api_key="not-needed",
        timeout=300,
        max_retries=2,
    )
    agent = create_react_agent(
        llm, [calculator], prompt="You compute. Use the calculator, then answer."
    )

    async def one(i):
        t0 = time.perf_counter()
        result = await agent.ainvoke({"messages": [("user", prompt(i))]})
        messages = result["messages"]
        answer = messages[-1].content
        llm_turns = sum(1 for m in messages if m.type == "ai")
        return answer.startswith("[simulated]"), llm_turns, time.perf_counter() - t0

    cpu_before = time.process_time()
    started = time.perf_counter()
    results = await asyncio.gather(
        *(one(i) for i in range(args.requests)), return_exceptions=True
    )
    wall = time.perf_counter() - started
    done = [r for r in results if not isinstance(r, BaseException)]
    ok = [r for r in done if r[0]]
    cpu = time.process_time() - cpu_before
    print(
        json.dumps(
            {
                "wall_secs": wall,
                "steps": sum(r[1] for r in done),
                "tasks": len(ok),
                "failed": args.requests - len(ok),
                "step_latency": percentiles([]),
                "task_latency": percentiles([r[2] for r in ok]),
                "peak_rss_bytes": peak_rss_bytes(),
                # The workload's CPU only: Python's imports (about a second) are left out.
                "cpu_secs": cpu,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
