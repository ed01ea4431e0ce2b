//! Headless Chromium, driven from the command line: rasterizes charts to PNG and loads report
//! pages in a real browser (for tests: does the page render, with no console errors?).
//!
//! Chromium rather than a Rust rasterizer because it draws the SVG exactly as the report's
//! readers will see it, with the system's fonts, and it is the same program the tests use.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ReportError;

/// Where Chromium is looked for when `AUTODEBUG_CHROMIUM` is not set.
const CANDIDATES: [&str; 4] =
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome", "/usr/bin/google-chrome-stable"];

/// How long one page load may take before Chromium is killed.
const PAGE_TIMEOUT: Duration = Duration::from_secs(90);

/// A Chromium (or Chrome) executable.
#[derive(Debug, Clone)]
pub struct Chromium {
    program: PathBuf,
}

/// What Chromium reported while loading a page.
#[derive(Debug, Clone, Default)]
pub struct PageLoad {
    /// The serialized DOM after load (`--dump-dom` only).
    pub dom: String,
    /// Console messages and uncaught exceptions the page produced.
    pub console: Vec<String>,
    /// Chromium's whole stderr, for diagnosing a failure.
    pub stderr: String,
}

impl Chromium {
    /// `AUTODEBUG_CHROMIUM` if set, else the first of the usual install paths that exists.
    pub fn find() -> Option<Chromium> {
        if let Some(path) = std::env::var_os("AUTODEBUG_CHROMIUM") {
            let path = PathBuf::from(path);
            return path.is_file().then_some(Chromium { program: path });
        }
        CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file()).map(|program| Chromium { program })
    }

    pub fn at(program: impl Into<PathBuf>) -> Chromium {
        Chromium { program: program.into() }
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Loads `page` (an HTML or SVG file) and prints its DOM.
    pub fn dump_dom(&self, page: &Path) -> Result<PageLoad, ReportError> {
        self.run(page, &["--dump-dom".to_string()])
    }

    /// Loads `page` in a `width` x `height` window and writes a PNG screenshot of it.
    pub fn screenshot(&self, page: &Path, png: &Path, width: u32, height: u32) -> Result<PageLoad, ReportError> {
        let png = absolute(png)?;
        let load = self.run(
            page,
            &[
                format!("--screenshot={}", png.display()),
                format!("--window-size={width},{height}"),
                "--hide-scrollbars".to_string(),
                "--default-background-color=ffffffff".to_string(),
            ],
        )?;
        if !png.is_file() {
            return Err(ReportError::Browser(format!(
                "{} wrote no screenshot to {}; its stderr ends with: {}",
                self.program.display(),
                png.display(),
                tail(&load.stderr)
            )));
        }
        Ok(load)
    }

    fn run(&self, page: &Path, extra: &[String]) -> Result<PageLoad, ReportError> {
        let page = absolute(page)?;
        let profile = tempfile::tempdir().map_err(|e| ReportError::io(std::env::temp_dir(), e))?;
        let mut command = Command::new(&self.program);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(format!("file://{}", page.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| {
            ReportError::Browser(format!(
                "cannot start {}: {e}; install it (`apt-get install chromium`) or set AUTODEBUG_CHROMIUM",
                self.program.display()
            ))
        })?;
        let stdout = child.stdout.take().map(read_in_background);
        let stderr = child.stderr.take().map(read_in_background);
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() < PAGE_TIMEOUT => std::thread::sleep(Duration::from_millis(50)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ReportError::Browser(format!(
                        "{} did not finish loading {} within {}s",
                        self.program.display(),
                        page.display(),
                        PAGE_TIMEOUT.as_secs()
                    )));
                }
                Err(e) => return Err(ReportError::Browser(format!("waiting for {}: {e}", self.program.display()))),
            }
        };
        let dom = stdout.map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        let stderr = stderr.map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        if !status.success() {
            return Err(ReportError::Browser(format!(
                "{} exited with {status} loading {}; its stderr ends with: {}",
                self.program.display(),
                page.display(),
                tail(&stderr)
            )));
        }
        let console =
            stderr.lines().filter(|l| l.contains("CONSOLE") || l.contains("Uncaught")).map(str::to_string).collect();
        Ok(PageLoad { dom, console, stderr })
    }
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn absolute(path: &Path) -> Result<PathBuf, ReportError> {
    std::path::absolute(path).map_err(|e| ReportError::io(path, e))
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}
