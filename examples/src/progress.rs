//! The progress display of the Nexmark binaries: an `indicatif` bar on a terminal, a
//! plain line every few seconds otherwise (logs, CI), nothing when disabled.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a plain (non-terminal) progress line is printed.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// How often the bar's message is refreshed (formatting it per event would cost more
/// than the event).
const BAR_EVERY: Duration = Duration::from_millis(200);

enum Display {
    Off,
    Bar(ProgressBar),
    Plain,
}

/// Progress of one run over `total` units (events or epochs).
pub struct Progress {
    display: Display,
    label: String,
    total: u64,
    last: Instant,
}

impl Progress {
    /// A progress display for `label` over `total` units: a bar when `enabled` and stderr
    /// is a terminal, plain lines when `enabled` and it is not, nothing otherwise.
    pub fn new(label: impl Into<String>, total: u64, enabled: bool) -> Self {
        let label = label.into();
        let display = match (enabled, std::io::stderr().is_terminal()) {
            (false, _) => Display::Off,
            (true, true) => {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                let style = ProgressStyle::with_template(
                    "{prefix} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({percent}%) {msg}",
                )
                .expect("the progress template is valid");
                bar.set_style(style);
                bar.set_prefix(label.clone());
                Display::Bar(bar)
            }
            (true, false) => Display::Plain,
        };
        Progress {
            display,
            label,
            total,
            last: Instant::now(),
        }
    }

    /// Reports that `done` units are done; `message` (rates, counters) is only built when
    /// it is shown.
    pub fn update(&mut self, done: u64, message: impl FnOnce() -> String) {
        let every = match &self.display {
            Display::Off => return,
            Display::Bar(_) => BAR_EVERY,
            Display::Plain => PLAIN_EVERY,
        };
        if self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        match &self.display {
            Display::Bar(bar) => {
                bar.set_position(done);
                bar.set_message(message());
            }
            Display::Plain => {
                let percent = done as f64 * 100.0 / self.total.max(1) as f64;
                eprintln!("{}: {done}/{} ({percent:.0}%), {}", self.label, self.total, message());
            }
            Display::Off => {}
        }
    }

    /// Whether a bar is drawn (false for plain lines and when disabled).
    pub fn is_bar(&self) -> bool {
        matches!(self.display, Display::Bar(_))
    }

    /// Removes the bar; plain output needs no ending.
    pub fn finish(self) {
        if let Display::Bar(bar) = self.display {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_progress_never_builds_a_message() {
        let mut p = Progress::new("q", 10, false);
        p.last = Instant::now() - Duration::from_secs(60);
        p.update(5, || panic!("a disabled display built its message"));
        assert!(!p.is_bar());
        p.finish();
    }

    #[test]
    fn plain_lines_are_rate_limited() {
        // Test processes have no terminal on stderr, so this is the plain display.
        let mut p = Progress::new("q", 10, true);
        if p.is_bar() {
            return; // run from a terminal by hand: nothing to check here
        }
        let mut built = 0;
        p.update(1, || {
            built += 1;
            String::new()
        });
        assert_eq!(built, 0, "a line within {PLAIN_EVERY:?} of the start");
        p.last = Instant::now() - PLAIN_EVERY;
        p.update(2, || {
            built += 1;
            String::new()
        });
        assert_eq!(built, 1);
        p.finish();
    }
}
