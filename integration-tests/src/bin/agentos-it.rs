//! The `agentos` binary, built as a target of this crate so that the end-to-end tests can
//! start it as a child process (`CARGO_BIN_EXE_agentos-it`): cargo builds and names binaries
//! only for the package under test, not for its dependencies. Its `main` is the real one's.
//!
//! One extra subcommand serves the tests as a `run_command` program with a visible side
//! effect: `agentos-it append-line FILE LINE` appends `LINE` and a newline to `FILE` (created
//! if missing) in a single `write` on a file opened with `O_APPEND`, so concurrent appends
//! never interleave and a line that appears twice was really written twice. With
//! `--then-sleep-ms N` it then sleeps N ms before it exits: a call that is still running when
//! the runtime is killed, after its effect happened.

use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("append-line") {
        return append_line(&args[2..]);
    }
    agentos_actors::cli::main()
}

fn append_line(args: &[String]) -> ExitCode {
    let (file, line, sleep_ms) = match args {
        [file, line] => (file, line, 0),
        [file, line, flag, ms] if flag == "--then-sleep-ms" => match ms.parse::<u64>() {
            Ok(ms) => (file, line, ms),
            Err(_) => {
                eprintln!("--then-sleep-ms needs a number of milliseconds, got {ms:?}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: agentos-it append-line FILE LINE [--then-sleep-ms N]");
            return ExitCode::from(2);
        }
    };
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    match written {
        Ok(()) => {
            println!("appended to {file}");
            std::thread::sleep(std::time::Duration::from_millis(sleep_ms));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot append to {file}: {e}");
            ExitCode::from(1)
        }
    }
}
