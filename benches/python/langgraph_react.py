"""LangGraph side of the `react` scenario of `agentos-bench`.

N requests, each a ReAct exchange of two LLM turns and one calculator call, all submitted at
once with asyncio.gather, through a LangGraph `StateGraph`: an LLM node, a `ToolNode` with the
calculator, and the conditional edge from the LLM node to the tools and back. The LLM is a
plain function with zero latency (no network): on the first turn it returns an `AIMessage`
calling the calculator on the prompt, on the second the answer with the tool's result. Prints
one JSON sample on stdout with the same fields as the Rust side (see `langgraph_bench.py`):
wall time, steps, tasks, latencies, peak RSS of this process and the CPU time of the workload
(imports and graph compilation excluded).
"""

import argparse
import ast
import asyncio
import itertools
import json
import math
import operator
import time

from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

# The calculator of `langgraph_bench.py`, unchanged (that script imports langchain_openai,
# which this one does not need, so it is not imported from there).
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


CALL_IDS = itertools.count()


async def llm(state: MessagesState):
    """The zero-latency model: a calculator call on the prompt, then the answer."""
    last = state["messages"][-1]
    if isinstance(last, ToolMessage):
        return {"messages": [AIMessage(content=f"done: {last.content}")]}
    call = {
        "name": "calculator",
        "args": {"expression": last.content},
        "id": f"call-{next(CALL_IDS)}",
        "type": "tool_call",
    }
    return {"messages": [AIMessage(content="", tool_calls=[call])]}


def build_graph():
    graph = StateGraph(MessagesState)
    graph.add_node("llm", llm)
    graph.add_node("tools", ToolNode([calculator]))
    graph.add_edge(START, "llm")
    graph.add_conditional_edges("llm", tools_condition, {"tools": "tools", END: END})
    graph.add_edge("tools", "llm")
    return graph.compile()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, required=True)
    args = parser.parse_args()

    graph = build_graph()

    async def one(i):
        t0 = time.perf_counter()
        result = await graph.ainvoke({"messages": [("user", prompt(i))]})
        messages = result["messages"]
        answer = messages[-1].content
        llm_turns = sum(1 for m in messages if m.type == "ai")
        tool_calls = sum(1 for m in messages if m.type == "tool")
        ok = answer.startswith("done: ") and llm_turns == 2 and tool_calls == 1
        return ok, llm_turns, time.perf_counter() - t0

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
                # The workload's CPU only: imports and compiling the graph are left out.
                "cpu_secs": cpu,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
