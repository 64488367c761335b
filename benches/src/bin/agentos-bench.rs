//! `agentos-bench`: the scenario runner (see `agentos_benches::runner`).
//!
//! `agentos-bench sandbox-exec ...` is the command sandbox's launcher, as in `agentos`, so that
//! the `sandbox_startup` scenario measures the launcher of this very build.

fn main() -> std::process::ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "sandbox-exec")
    {
        return agentos_actors::cli::main();
    }
    agentos_benches::runner::main()
}
