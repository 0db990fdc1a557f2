//! The developer tools' command line: `hookline listen`, the API commands (`app`,
//! `endpoint`, `event-type`, `send`, `attempts`, `recover`), `completions` and `man`.
//!
//! Only the flags and their parsing live here (so the whole `hookline` command tree, and
//! with it the completions and the man page, comes from one place); what the commands do
//! lives in the `hookline` crate.

use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand, ValueEnum};

/// Where the API commands find hookline and how they print. Global within each command,
/// so `hookline app --json list` and `hookline app list --json` both work.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// hookline's base URL (without `/api/v1`).
    #[arg(
        long,
        env = "HOOKLINE_URL",
        default_value = "http://127.0.0.1:8080",
        global = true,
        value_name = "URL"
    )]
    pub url: String,

    /// API token: an admin token, or an application's token for that application.
    #[arg(
        long,
        env = "HOOKLINE_TOKEN",
        hide_env_values = true,
        global = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// Print JSON (one object per line) instead of tables, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Flags of `hookline listen`.
#[derive(Debug, Clone, Args)]
#[command(after_help = LISTEN_AFTER_HELP)]
pub struct ListenArgs {
    /// Port to receive on (127.0.0.1 only; 0 picks a free one).
    #[arg(long, default_value_t = 9000)]
    pub port: u16,

    /// The endpoint's secret, to verify Standard Webhooks signatures (`webhook-*` or
    /// `svix-*` headers): `whsec_...`. A `whpk_...` public key is for ed25519 signatures.
    #[arg(long, env = "HOOKLINE_LISTEN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// Verify a hex HMAC-SHA256 of the body in this header instead (an endpoint with
    /// `"signature": {"scheme": "hmac-sha256-hex", "header": NAME}`); needs --key.
    #[arg(long, value_name = "NAME", requires = "key")]
    pub hmac_header: Option<String>,

    /// The HMAC key for --hmac-header: the endpoint's secret string exactly as shown.
    #[arg(long, hide_env_values = true, requires = "hmac_header")]
    pub key: Option<String>,

    /// HTTP status to answer every delivery with (e.g. 500 to watch retries).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(100..=599))]
    pub status: u16,

    /// Wait this long before answering (`0ms`, `250ms`, `2s`, `1m`), e.g. to watch an
    /// endpoint's timeout.
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    pub delay: Duration,

    /// Print each delivery as one JSON object per line instead of for a person.
    #[arg(long)]
    pub json: bool,
}

const LISTEN_AFTER_HELP: &str = "hookline refuses to deliver to loopback addresses \
unless allowed: start the server with `--allow-target 127.0.0.0/8` to deliver here.

Example:
  hookline listen --secret whsec_...   # then point an endpoint at http://127.0.0.1:9000/";

/// `hookline app ...`
#[derive(Debug, Clone, Args)]
pub struct AppArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub command: AppCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AppCommand {
    /// Create an application (one customer of your product).
    Create {
        /// Its name.
        name: String,
        /// Your own id for it, usable wherever its `app_` id is.
        #[arg(long)]
        uid: Option<String>,
    },
    /// List applications.
    List(ListArgs),
    /// Show one application (by id or uid).
    Get { app: String },
    /// Delete an application with its endpoints and messages.
    Delete { app: String },
}

/// Paging flags of the list commands.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Most items to show (1-250).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=250))]
    pub limit: u32,
    /// Continue from this iterator (printed when there are more).
    #[arg(long)]
    pub iterator: Option<String>,
}

/// `hookline endpoint ...`
#[derive(Debug, Clone, Args)]
pub struct EndpointArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub command: EndpointCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum EndpointCommand {
    /// Add an endpoint to an application.
    Add(EndpointAddArgs),
    /// List an application's endpoints.
    List {
        app: String,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Show one endpoint.
    Get { app: String, endpoint: String },
    /// Print the endpoint's current signing secret.
    Secret { app: String, endpoint: String },
    /// Give the endpoint a new secret; the old one keeps signing for a grace period.
    Rotate {
        app: String,
        endpoint: String,
        /// The new secret (default: generated).
        #[arg(long, hide_env_values = true)]
        key: Option<String>,
        /// Seconds the old secret keeps signing too (server default: 24 h).
        #[arg(long, value_name = "SECONDS")]
        grace_period: Option<u64>,
    },
    /// Stop delivering to the endpoint.
    Disable { app: String, endpoint: String },
    /// Deliver to the endpoint again.
    Enable { app: String, endpoint: String },
}

/// Flags of `hookline endpoint add`.
#[derive(Debug, Clone, Args)]
pub struct EndpointAddArgs {
    /// The application (id or uid).
    pub app: String,
    /// Where deliveries go. (Not named `url`: that is the global `--url` of hookline.)
    #[arg(value_name = "URL")]
    pub endpoint_url: String,
    /// Only these event types (repeatable; default: all).
    #[arg(long = "event-type", value_name = "NAME")]
    pub event_types: Vec<String>,
    /// Only messages with one of these channels (repeatable).
    #[arg(long = "channel", value_name = "CHANNEL")]
    pub channels: Vec<String>,
    /// A description.
    #[arg(long)]
    pub description: Option<String>,
    /// Your own id for the endpoint.
    #[arg(long)]
    pub uid: Option<String>,
    /// Its signing secret (default: generated).
    #[arg(long, hide_env_values = true)]
    pub secret: Option<String>,
    /// Sign with a hex HMAC-SHA256 of the body in this header instead of Standard
    /// Webhooks.
    #[arg(long, value_name = "HEADER")]
    pub hmac_header: Option<String>,
    /// More endpoint fields as a JSON object (e.g. `{"retryPolicy": {"kind": "none"}}`),
    /// merged over the flags.
    #[arg(long, value_name = "JSON")]
    pub with: Option<String>,
}

/// `hookline event-type ...`
#[derive(Debug, Clone, Args)]
pub struct EventTypeArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub command: EventTypeCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum EventTypeCommand {
    /// Add an event type.
    Add {
        /// Its name, e.g. `lead.created`.
        name: String,
        /// What it means.
        #[arg(long, default_value = "")]
        description: String,
        /// JSON Schema of its payload (version 1): JSON, `@FILE` or `-` for stdin.
        #[arg(long, value_name = "JSON|@FILE|-")]
        schema: Option<String>,
    },
    /// List event types.
    List(ListArgs),
}

/// Flags of `hookline send`.
#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The application (id or uid).
    pub app: String,
    /// The event type, e.g. `lead.created`.
    pub event_type: String,
    /// The payload: JSON, `@FILE`, or `-` for stdin.
    #[arg(long, value_name = "JSON|@FILE|-")]
    pub payload: String,
    /// Idempotency id of the event: a second send with it is not delivered again.
    #[arg(long)]
    pub event_id: Option<String>,
    /// Channels of the message (repeatable).
    #[arg(long = "channel", value_name = "CHANNEL")]
    pub channels: Vec<String>,
}

/// Flags of `hookline attempts`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("of").required(true).multiple(true).args(["msg", "endpoint"])))]
pub struct AttemptsArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The application (id or uid).
    pub app: String,
    /// Attempts of this message (id or eventId).
    #[arg(long)]
    pub msg: Option<String>,
    /// Attempts to this endpoint (id or uid); with --msg, that message's attempts to it.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Keep printing new attempts as they are made, like `tail -f` (Ctrl-C stops).
    #[arg(long, short)]
    pub follow: bool,
    /// Most attempts to show at first (1-250).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=250))]
    pub limit: u32,
}

/// Flags of `hookline recover`.
#[derive(Debug, Clone, Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The application (id or uid).
    pub app: String,
    /// The endpoint (id or uid).
    pub endpoint: String,
    /// Resend failed deliveries of messages since this time: RFC 3339
    /// (`2026-01-31T12:00:00Z`) or a duration ago (`2h`, `3d`).
    #[arg(long, value_name = "TIME")]
    pub since: String,
    /// ...and before this time (same forms; default: now).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Return once the deliveries are requeued, without waiting for their outcomes.
    #[arg(long)]
    pub no_wait: bool,
}

/// Shells `hookline completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Elvish,
    #[value(name = "powershell")]
    PowerShell,
}

/// Flags of `hookline completions`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Example (bash):\n  hookline completions bash > ~/.local/share/bash-completion/completions/hookline"
)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: Shell,
}

/// Flags of `hookline man`.
#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// Write `hookline.1` and a page per command (`hookline-serve.1`, ...) into this
    /// directory instead of printing `hookline.1` to stdout.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

/// Parses `250ms`, `2s`, `1m`, `1h`, `3d` (a whole number and a unit) into a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}` needs a unit: ms, s, m, h or d (e.g. 250ms, 2s)"))?;
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` must start with a whole number (e.g. 250ms, 2s)"))?;
    let per_unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{unit}` is not a unit: use ms, s, m, h or d")),
    };
    n.checked_mul(per_unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{s}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::{CommandFactory, Parser};

    #[test]
    fn the_command_tree_is_consistent() {
        crate::Cli::command().debug_assert();
    }

    #[test]
    fn api_flags_are_global_within_a_command() {
        let cli = crate::Cli::try_parse_from([
            "hookline",
            "app",
            "--json",
            "list",
            "--url",
            "http://h:1",
            "--token",
            "t",
        ])
        .unwrap();
        let crate::Command::App(app) = cli.command else {
            panic!("app")
        };
        assert!(app.api.json);
        // A command's own URL argument does not take the place of --url.
        let cli = crate::Cli::try_parse_from([
            "hookline",
            "endpoint",
            "add",
            "acme",
            "http://r/x",
            "--url",
            "http://h:1",
        ])
        .unwrap();
        let crate::Command::Endpoint(ep) = cli.command else {
            panic!("endpoint")
        };
        assert_eq!(ep.api.url, "http://h:1");
        let crate::EndpointCommand::Add(add) = ep.command else {
            panic!("add")
        };
        assert_eq!(add.endpoint_url, "http://r/x");
        assert_eq!(app.api.url, "http://h:1");
        assert_eq!(app.api.token.as_deref(), Some("t"));
    }

    #[test]
    fn attempts_needs_a_message_or_an_endpoint() {
        let err = crate::Cli::try_parse_from(["hookline", "attempts", "app_1"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(
            crate::Cli::try_parse_from(["hookline", "attempts", "a", "--endpoint", "e"]).is_ok()
        );
    }

    #[test]
    fn listen_hmac_header_needs_a_key() {
        let err = crate::Cli::try_parse_from(["hookline", "listen", "--hmac-header", "X-Sig"])
            .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let err = crate::Cli::try_parse_from(["hookline", "listen", "--status", "99"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn durations_parse_with_each_unit() {
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("3d"), Ok(Duration::from_secs(3 * 86400)));
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(parse_duration("5").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("ms").unwrap_err().contains("whole number"));
        assert!(parse_duration("5w").unwrap_err().contains("not a unit"));
        assert!(parse_duration("1.5s").unwrap_err().contains("not a unit"));
        assert!(parse_duration("99999999999999999d")
            .unwrap_err()
            .contains("too long"));
    }
}
