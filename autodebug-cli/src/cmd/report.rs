//! `autodebug report`: one self-contained HTML report of a session, plus its charts as SVG or
//! PNG files for slides.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use autodebug_core::Error;
use autodebug_core::store::{DEFAULT_FILE_NAME, Store};
use autodebug_report::{Chromium, Report};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Session name; default: the latest session in the store.
    #[arg(long)]
    session: Option<String>,
    /// The experiment store: a database file or the sessions directory holding autodebug.db.
    #[arg(long, default_value = "sessions")]
    db: PathBuf,
    /// Where to write the HTML report.
    #[arg(long, short, default_value = "report.html")]
    out: PathBuf,
    /// Also write every chart as an SVG file into this directory.
    #[arg(long)]
    svg_dir: Option<PathBuf>,
    /// Also write every chart as a PNG (and SVG) file into this directory; needs Chromium
    /// (`/usr/bin/chromium`, or the path in AUTODEBUG_CHROMIUM).
    #[arg(long)]
    png_dir: Option<PathBuf>,
    /// Print one JSON object listing what was written.
    #[arg(long)]
    json: bool,
}

/// A directory means the store inside it; a missing store is an error, not a new empty file.
pub fn store_path(db: &Path) -> autodebug_core::Result<PathBuf> {
    let path = if db.is_dir() { db.join(DEFAULT_FILE_NAME) } else { db.to_path_buf() };
    if !path.is_file() {
        return Err(Error::config(
            format!("--db {}", db.display()),
            format!(
                "no experiment store at {}; pass --db with the sessions directory of `autodebug run`/`demo` (or its autodebug.db)",
                path.display()
            ),
        ));
    }
    Ok(path)
}

pub async fn run(args: Args, global: &crate::Global) -> autodebug_core::Result<ExitCode> {
    let store = Store::open(&store_path(&args.db)?)?;
    let report = Report::from_store(&store, args.session.as_deref())?;
    report.write_html(&args.out)?;
    let mut svgs = Vec::new();
    if let Some(dir) = &args.svg_dir {
        svgs = report.write_svgs(dir)?;
    }
    let mut pngs = Vec::new();
    if let Some(dir) = &args.png_dir {
        let chromium = Chromium::find().ok_or_else(|| {
            Error::config(
                "--png-dir",
                "PNG files are drawn by headless Chromium, which was not found at /usr/bin/chromium; install it (`apt-get install chromium`), set AUTODEBUG_CHROMIUM to its path, or use --svg-dir",
            )
        })?;
        if args.svg_dir.as_deref() != Some(dir.as_path()) {
            svgs.extend(report.write_svgs(dir)?);
        }
        pngs = report.write_pngs(dir, &chromium)?;
    }
    if args.json {
        let value = json!({
            "session": report.data.session,
            "html": args.out,
            "charts": report.charts.iter().map(|c| json!({"name": c.name, "title": c.title})).collect::<Vec<_>>(),
            "svg_files": svgs,
            "png_files": pngs,
            "champion": report.data.champion().map(|c| c.number),
        });
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    } else if !global.quiet {
        println!(
            "wrote {} ({} charts) for session `{}`{}{}",
            args.out.display(),
            report.charts.len(),
            report.data.session,
            if svgs.is_empty() { String::new() } else { format!("; {} SVG files", svgs.len()) },
            if pngs.is_empty() { String::new() } else { format!("; {} PNG files", pngs.len()) },
        );
    }
    Ok(ExitCode::SUCCESS)
}
