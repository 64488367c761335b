//! The client subcommands: `submit`, `workflows`, `tasks`, `ps`, `suspend`, `resume`, `kill`,
//! `cancel` and `events` speak the control-plane API of a running `agentos serve`.
//!
//! # Layout
//! - this file: the subcommands as clap parses them, and the HTTP client.
//! - `error`: [`ClientError`], its exit codes, and how refusals are printed.
//! - [`table`]: aligned tables for people, and the workflow, task and agent tables.
//! - `submit`: reading workflow and config files, `POST /api/workflows`, `--wait`.
//! - `inspect`: `workflows`, `tasks`, `ps`.
//! - [`quotas`]: the quota columns and lines `ps` adds from `GET /api/quotas`.
//! - `control`: `suspend`, `resume`, `kill`, `cancel`.
//! - [`events`]: the Server-Sent Events reader behind `events`.
//! - [`progress`]: the progress bar of `run` and `submit --wait`.
//!
//! # Where and who
//! The server is `--server URL`, else `$AGENTOS_SERVER`, else [`DEFAULT_SERVER`]. A non-empty
//! `$AGENTOS_TOKEN` is sent as `Authorization: Bearer <token>` on every request.
//!
//! # Output and exit codes
//! Tables for people on stdout, or with `--json` the server's JSON (one document per line).
//! Notes meant for people (what was submitted, reconnects) go to stderr.
//! - `0`: done; for `submit --wait`, every workflow succeeded.
//! - `1`: `submit --wait`: a workflow failed or was cancelled.
//! - `2`: the request was refused (any 4xx or 5xx answer, printed as the server gave it), or
//!   the input was wrong before anything was sent (unreadable or invalid file, bad URL).
//! - `3`: no usable answer: the server could not be reached (connection refused, timeout) or
//!   did not answer like an AgentOS server.
//!
//! When stdout is closed (`agentos events --follow | head`), the command stops quietly.

pub mod events;
pub mod progress;
pub mod quotas;
pub mod table;

mod control;
mod error;
mod inspect;
mod submit;

pub use error::ClientError;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{RequestBuilder, StatusCode, Url};
use serde_json::Value;

/// The server a client command talks to when neither `--server` nor `$AGENTOS_SERVER` says.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:9464";

/// The environment variable a client reads its bearer token from.
pub const TOKEN_ENV: &str = "AGENTOS_TOKEN";

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an ordinary request may take, answer included (not the event stream).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the server is and how to print its answers.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Base URL of a running `agentos serve`.
    #[arg(long, value_name = "URL", env = "AGENTOS_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Print the server's JSON (one document per line) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The client subcommands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Submit workflows to a running server and print their ids.
    ///
    /// FILE holds one workflow, `(name: "...", tasks: [...])` in RON or an object in JSON
    /// (`.json`; a JSON array submits each element), or a whole config, whose `workflows` are
    /// all submitted. Exits 0 when accepted (with `--wait`: when every workflow succeeded),
    /// 1 with `--wait` when one failed or was cancelled, 2 when refused, 3 when the server
    /// cannot be reached.
    Submit {
        /// The workflow or config file.
        file: PathBuf,
        /// Wait until every submitted workflow is finished, then print its tasks.
        #[arg(long)]
        wait: bool,
        /// Submitting again with the same key returns the first workflow instead of a new
        /// one. With several workflows in FILE, each is sent as `KEY/NAME`.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
        /// The server, and how to print its answers.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the workflows of a running server.
    Workflows {
        /// The server, and how to print its answers.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List tasks: every task, or one workflow's.
    Tasks {
        /// Only this workflow's tasks (by workflow id).
        #[arg(long, value_name = "ID")]
        workflow: Option<String>,
        /// The server, and how to print its answers.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List agent instances with their control blocks.
    Ps {
        /// The server, and how to print its answers.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Stop dispatching to an agent; its running attempts pause at their next step.
    Suspend {
        /// Agent name.
        agent: String,
        /// The server, and how to print its answers.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Undo `suspend` (or bring a killed agent's instances back).
    Resume {
        /// Agent name.
        agent: String,
        /// The server, and how to print its answers.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Stop every instance of an agent; its running tasks come back as failed attempts and
    /// go on to retries or the fallback agent.
    Kill {
        /// Agent name.
        agent: String,
        /// The server, and how to print its answers.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Cancel a workflow: its unfinished tasks end as cancelled.
    Cancel {
        /// Workflow id.
        workflow: String,
        /// The server, and how to print its answers.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print the server's events (task state changes, LLM and tool calls, ...).
    ///
    /// Without `--follow`, prints what the server still holds and stops once no event has
    /// come for half a second.
    Events {
        /// Keep printing new events; reconnect (resuming after the last event seen) when the
        /// stream breaks.
        #[arg(long)]
        follow: bool,
        /// Only this workflow's events.
        #[arg(long, value_name = "ID")]
        workflow: Option<String>,
        /// Only this task's events (`workflow/task`).
        #[arg(long, value_name = "TASK")]
        task: Option<String>,
        /// Only this agent's events.
        #[arg(long, value_name = "NAME")]
        agent: Option<String>,
        /// Start after this event id (sent as `Last-Event-ID`).
        #[arg(long, value_name = "ID")]
        after: Option<String>,
        /// The server, and how to print its answers.
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Runs a client subcommand on its own current-thread runtime and prints any error.
pub fn main(command: ClientCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the client's runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(execute(command)) {
        Ok(code) => code,
        Err(ClientError::StdoutClosed) => ExitCode::SUCCESS,
        Err(e) => {
            eprint!("{}", e.report());
            ExitCode::from(e.exit_code())
        }
    }
}

async fn execute(command: ClientCommand) -> Result<ExitCode, ClientError> {
    match command {
        ClientCommand::Submit {
            file,
            wait,
            idempotency_key,
            server,
        } => {
            // The file is read and checked before anything is sent: a typo is exit 2
            // whether or not a server is up.
            let submissions = submit::read(&file)?;
            let client = Client::from_env(&server.server)?;
            submit::run(
                &client,
                &submissions,
                wait,
                idempotency_key.as_deref(),
                server.json,
            )
            .await
        }
        ClientCommand::Workflows { server } => {
            inspect::workflows(&Client::from_env(&server.server)?, server.json).await
        }
        ClientCommand::Tasks { workflow, server } => {
            let client = Client::from_env(&server.server)?;
            inspect::tasks(&client, workflow.as_deref(), server.json).await
        }
        ClientCommand::Ps { server } => {
            inspect::ps(&Client::from_env(&server.server)?, server.json).await
        }
        ClientCommand::Suspend { agent, server } => {
            let client = Client::from_env(&server.server)?;
            control::agent(&client, &agent, "suspend", server.json).await
        }
        ClientCommand::Resume { agent, server } => {
            let client = Client::from_env(&server.server)?;
            control::agent(&client, &agent, "resume", server.json).await
        }
        ClientCommand::Kill { agent, server } => {
            let client = Client::from_env(&server.server)?;
            control::agent(&client, &agent, "kill", server.json).await
        }
        ClientCommand::Cancel { workflow, server } => {
            let client = Client::from_env(&server.server)?;
            control::cancel(&client, &workflow, server.json).await
        }
        ClientCommand::Events {
            follow,
            workflow,
            task,
            agent,
            after,
            server,
        } => {
            let client = Client::from_env(&server.server)?;
            let filter = events::Filter {
                workflow,
                task,
                agent,
            };
            let opts = events::Options {
                follow,
                after,
                json: server.json,
                idle: events::IDLE,
            };
            events::run(&client, &filter, &opts).await
        }
    }
}

/// An HTTP client of one AgentOS server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Client {
    /// A client of `server`, with the token from `$AGENTOS_TOKEN` (an empty one counts as
    /// none).
    pub fn from_env(server: &str) -> Result<Self, ClientError> {
        let token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
        Self::new(server, token)
    }

    /// A client of `server` (an `http://` or `https://` base URL) sending `token`.
    pub fn new(server: &str, token: Option<String>) -> Result<Self, ClientError> {
        let bad = |why: &str| ClientError::Input(format!("invalid server URL {server:?}: {why}"));
        let base = Url::parse(server).map_err(|e| bad(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(bad("expected http://HOST:PORT or https://HOST:PORT"));
        }
        if let Some(t) = &token {
            HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                ClientError::Input(format!(
                    "${TOKEN_ENV} holds characters that cannot be sent in a header"
                ))
            })?;
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("agentos/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Input(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { http, base, token })
    }

    /// The server's base URL as given.
    pub fn server(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The URL of `segments` under the base (each segment percent-encoded).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A request to `url` with the token set.
    pub fn request(&self, method: reqwest::Method, url: Url) -> RequestBuilder {
        let req = self.http.request(method, url);
        match &self.token {
            Some(t) => req.header(AUTHORIZATION, format!("Bearer {t}")),
            None => req,
        }
    }

    /// `GET` of `segments`, answered with JSON.
    pub async fn get(&self, segments: &[&str]) -> Result<Value, ClientError> {
        let req = self.request(reqwest::Method::GET, self.url(segments));
        Ok(self.send(req).await?.1)
    }

    /// Sends `req` (with the ordinary timeout) and reads a JSON answer: the status and the
    /// body of a 2xx answer, or the refusal.
    pub async fn send(&self, req: RequestBuilder) -> Result<(StatusCode, Value), ClientError> {
        let resp = self.open(req.timeout(REQUEST_TIMEOUT)).await?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.transport(&e))?;
        serde_json::from_str(&text)
            .map(|v| (status, v))
            .map_err(|e| self.bad_answer(format!("{status} with a body that is not JSON ({e})")))
    }

    /// Sends `req` and returns the response of a 2xx answer (for streams), or the refusal.
    pub async fn open(&self, req: RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(|e| self.transport(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.map_err(|e| self.transport(&e))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Err(ClientError::Refused {
            status,
            body,
            file: None,
            token_sent: self.token.is_some(),
        })
    }

    /// A failed exchange: no connection, a timeout, or a broken answer.
    fn transport(&self, e: &reqwest::Error) -> ClientError {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            let _ = write!(reason, ": {s}");
            source = s.source();
        }
        if e.is_timeout() {
            reason = format!("timed out ({reason})");
        }
        ClientError::Unreachable {
            server: self.server().to_owned(),
            reason,
        }
    }

    fn bad_answer(&self, reason: String) -> ClientError {
        ClientError::BadAnswer {
            server: self.server().to_owned(),
            reason,
        }
    }
}

/// Writes `text` to stdout and flushes it; a closed stdout ends the command quietly.
pub(crate) fn print(text: &str) -> Result<(), ClientError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(ClientError::StdoutClosed),
        Err(e) => Err(ClientError::Input(format!("cannot write to stdout: {e}"))),
    }
}

/// Prints one JSON document on one line.
pub(crate) fn print_json(v: &Value) -> Result<(), ClientError> {
    print(&format!("{v}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_a_base_path_and_encode_segments() {
        let c = Client::new("http://127.0.0.1:9464", None).unwrap();
        assert_eq!(
            c.url(&["api", "workflows", "a b/c"]).as_str(),
            "http://127.0.0.1:9464/api/workflows/a%20b%2Fc"
        );
        let c = Client::new("https://example.org/agentos/", None).unwrap();
        assert_eq!(
            c.url(&["api", "agents"]).as_str(),
            "https://example.org/agentos/api/agents"
        );
        assert_eq!(c.server(), "https://example.org/agentos");
    }

    #[test]
    fn bad_server_urls_are_input_errors() {
        for bad in ["127.0.0.1:9464", "ftp://x", "not a url", "mailto:a@b"] {
            let e = Client::new(bad, None).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}: {e}");
            assert!(e.to_string().contains("invalid server URL"), "{e}");
        }
        let e = Client::new("http://x", Some("a\nb".into())).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
