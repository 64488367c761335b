//! `agentos-bench`: the scenario runner (see `agentos_benches::runner`).
//!
//! `agentos-bench sandbox-exec ...` is the command sandbox's launcher, as in `agentos`, so that
//! the `sandbox_startup` scenario measures the launcher of this very build.
//! `agentos-bench __scale <spec>` is a child of the `scale` scenario.

fn main() -> std::process::ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "sandbox-exec")
    {
        return agentos_actors::cli::main();
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == agentos_benches::scenarios::scale::child::SUBCOMMAND)
    {
        let spec = std::env::args().nth(2).unwrap_or_default();
        return agentos_benches::scenarios::scale::child::main(&spec);
    }
    agentos_benches::runner::main()
}
