//! `agentos-bench`: the scenario runner (see `agentos_benches::runner`).

fn main() -> std::process::ExitCode {
    agentos_benches::runner::main()
}
