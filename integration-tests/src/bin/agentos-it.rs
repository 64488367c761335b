//! The `agentos` binary, built as a target of this crate so that the end-to-end tests can
//! start it as a child process (`CARGO_BIN_EXE_agentos-it`): cargo builds and names binaries
//! only for the package under test, not for its dependencies. Its `main` is the real one's.

fn main() -> std::process::ExitCode {
    agentos_actors::cli::main()
}
