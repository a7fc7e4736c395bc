//! What the operator sees. Events go to stderr (human lines, or JSON lines
//! with `--json`) and to the event log of the work directory; results go to
//! stdout. Colour only on a terminal and never with NO_COLOR; progress bars
//! only on a terminal.

use std::{
    fmt::Display,
    fs::File,
    io::{IsTerminal, Write},
    os::unix::fs::OpenOptionsExt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use camino::Utf8Path;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use jiff::Timestamp;

use crate::contract::{Event, Message};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

#[derive(Clone)]
pub struct Ui {
    inner: Arc<Inner>,
}

struct Inner {
    json: bool,
    /// Colour on stderr (events, errors) and on stdout (results): each only
    /// on a terminal, never with `--json` or NO_COLOR.
    color: bool,
    color_stdout: bool,
    tty: bool,
    bars: MultiProgress,
    log: Mutex<Option<File>>,
}

impl Ui {
    pub fn new(json: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        let wanted = !json && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let color = tty && wanted;
        let color_stdout = wanted && std::io::stdout().is_terminal();
        let bars = MultiProgress::with_draw_target(if tty && !json {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        Ui { inner: Arc::new(Inner { json, color, color_stdout, tty, bars, log: Mutex::new(None) }) }
    }

    pub fn is_json(&self) -> bool {
        self.inner.json
    }

    /// Whether a question can be asked: stdin and stderr are terminals.
    pub fn can_ask(&self) -> bool {
        self.inner.tty && std::io::stdin().is_terminal() && !self.inner.json
    }

    /// Also writes every event, with a timestamp, to `path` (JSON lines).
    pub fn attach_log(&self, path: &Utf8Path) {
        let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path);
        match file {
            Ok(file) => *self.inner.log.lock().expect("log lock") = Some(file),
            Err(e) => self.event(Level::Warn, "log", format_args!("cannot write the event log {path}: {e}")),
        }
    }

    pub fn info(&self, step: &str, message: impl Display) {
        self.event(Level::Info, step, message);
    }

    pub fn warn(&self, step: &str, message: impl Display) {
        self.event(Level::Warn, step, message);
    }

    pub fn error(&self, step: &str, message: impl Display) {
        self.event(Level::Error, step, message);
    }

    pub fn event(&self, level: Level, step: &str, message: impl Display) {
        let message = message.to_string();
        let said = Message { time: Timestamp::now().to_string(), step: step.to_owned(), message: message.clone() };
        let record = match level {
            Level::Info => Event::Info(said),
            Level::Warn => Event::Warning(said),
            Level::Error => Event::Error(said),
        };
        let record = serde_json::to_string(&record).expect("events serialize");
        self.write_log(&record);
        if self.inner.json {
            eprintln!("{record}");
            return;
        }
        let mark = match level {
            Level::Info => self.paint("36", "·"),
            Level::Warn => self.paint("33", "warning:"),
            Level::Error => self.paint("31", "error:"),
        };
        let line = format!("{mark} {} {message}", self.paint("1", step));
        self.inner.bars.suspend(|| eprintln!("{line}"));
    }

    fn write_log(&self, record: &str) {
        if let Some(file) = self.inner.log.lock().expect("log lock").as_mut() {
            let _ = writeln!(file, "{record}");
        }
    }

    /// `text` in SGR colour `code`, for stderr.
    pub fn paint(&self, code: &str, text: &str) -> String {
        paint(self.inner.color, code, text)
    }

    /// `text` in SGR colour `code`, for stdout.
    pub fn paint_stdout(&self, code: &str, text: &str) -> String {
        paint(self.inner.color_stdout, code, text)
    }

    /// A counter of `total` things; a bar on a terminal, events otherwise.
    pub fn progress(&self, step: &str, what: &str, total: u64) -> Progress {
        let bar = self.inner.bars.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{step} {what}"));
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { ui: self.clone(), bar, step: step.to_owned(), what: what.to_owned(), total, done: AtomicU64::new(0) }
    }

    /// A spinner while waiting for something with no count.
    pub fn spinner(&self, step: &str, message: impl Display) -> Progress {
        let bar = self.inner.bars.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix:.bold} {msg} ({elapsed})").expect("valid template"),
        );
        bar.set_prefix(step.to_owned());
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress {
            ui: self.clone(),
            bar,
            step: step.to_owned(),
            what: message.to_string(),
            total: 0,
            done: AtomicU64::new(0),
        }
    }
}

/// A running count. Without a terminal, progress is reported as events at
/// each quarter (JSON lines with `--json`: one per increment).
pub struct Progress {
    ui: Ui,
    bar: ProgressBar,
    step: String,
    what: String,
    total: u64,
    done: AtomicU64,
}

impl Progress {
    pub fn inc(&self, detail: &str) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        self.bar.inc(1);
        self.bar.set_message(detail.to_owned());
        let record = Event::Progress {
            time: Timestamp::now().to_string(),
            step: self.step.clone(),
            what: self.what.clone(),
            done,
            total: self.total,
            detail: detail.to_owned(),
        };
        let record = serde_json::to_string(&record).expect("events serialize");
        self.ui.write_log(&record);
        if self.ui.inner.json {
            eprintln!("{record}");
        } else if !self.ui.inner.tty && self.total > 0 && quarter(done, self.total) > quarter(done - 1, self.total) {
            eprintln!("· {} {}: {done}/{}", self.step, self.what, self.total);
        }
    }

    pub fn set_message(&self, message: impl Display) {
        self.bar.set_message(message.to_string());
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

fn quarter(done: u64, total: u64) -> u64 {
    done * 4 / total.max(1)
}

fn paint(on: bool, code: &str, text: &str) -> String {
    if on { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
}
