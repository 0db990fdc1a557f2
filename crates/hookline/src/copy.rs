//! `hookline copy`: the command around [`hookline_store::copy`], which does the work.
//! Here: where `--from` points (a file or a data dir), the progress bar (on stderr, only
//! for a person at a terminal), and nothing else.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use hookline_config::{CopyArgs, SQLITE_FILE};
use hookline_store::copy::{self, CopyOptions, CopyReport, Progress};
use hookline_store::postgres::PgSettings;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Runs the copy the flags describe. The error is one line (the flags' own errors
/// included), never a password or a secret.
pub async fn run(args: &CopyArgs) -> Result<CopyReport, String> {
    let (from, to) = args.source_and_target().map_err(|e| e.to_string())?;
    let source = source_file(&from)?;
    let target = PgSettings::parse(&to).map_err(|e| format!("--to: {e}"))?;
    let bar = progress_bar();
    let shown = bar.clone();
    let report = copy::sqlite_to_postgres(
        &source,
        &target,
        CopyOptions {
            with_history: args.with_history,
            allow_non_empty: args.allow_non_empty,
        },
        &move |p| match p {
            Progress::Counted { total } => shown.set_length(total),
            Progress::Copying(kind) => shown.set_message(kind.name()),
            Progress::Copied(_, n) => shown.inc(n),
            Progress::Checking => shown.set_message("checking counts"),
        },
    )
    .await;
    bar.finish_and_clear();
    report
}

/// The SQLite file `--from` names: the path itself, or `hookline.sqlite` in it when it is
/// a directory (a data dir).
fn source_file(path: &Path) -> Result<PathBuf, String> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let file = path.join(SQLITE_FILE);
    if file.exists() {
        Ok(file)
    } else {
        Err(format!(
            "--from: the directory {} holds no {SQLITE_FILE}; name the SQLite file or the data dir that holds it",
            path.display()
        ))
    }
}

/// A bar on stderr for a person watching; drawn nowhere when stderr is a file or a pipe
/// (logs and scripts get the summary line only).
fn progress_bar() -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(None, target);
    bar.set_style(
        ProgressStyle::with_template("{msg:>18} [{bar:40}] {pos}/{len} rows ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message("reading SQLite");
    bar
}
