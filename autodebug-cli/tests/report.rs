//! `autodebug report` on a store filled by `autodebug demo --iterations 3`, checked in a real
//! headless Chromium (`/usr/bin/chromium` or AUTODEBUG_CHROMIUM); that test is ignored in a plain
//! `cargo test`, and fails when run without a browser (`.ci/setup.sh` installs one).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use autodebug_report::Chromium;

fn autodebug(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autodebug")).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One demo session shared by the tests of this binary (it takes ~15 s): its directory and
/// the demo's own JSON summary.
fn demo() -> &'static (PathBuf, serde_json::Value) {
    static DEMO: OnceLock<(PathBuf, serde_json::Value)> = OnceLock::new();
    DEMO.get_or_init(|| {
        // Under the target dir, replaced on each run, so repeated runs leave no litter in /tmp.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-demo");
        let _ = std::fs::remove_dir_all(&dir);
        let run = autodebug(&["demo", "--iterations", "3", "--out", dir.to_str().unwrap(), "--json"]);
        assert!(run.status.success(), "demo failed: {}", text(&run.stderr));
        (dir, serde_json::from_slice(&run.stdout).unwrap())
    })
}

#[test]
fn report_writes_html_and_svg_files_for_the_demo_session() {
    let (store_dir, summary) = demo();
    let out = tempfile::tempdir().unwrap();
    let html = out.path().join("report.html");
    let svg_dir = out.path().join("svg");
    let run = autodebug(&[
        "report",
        "--db",
        store_dir.to_str().unwrap(),
        "--out",
        html.to_str().unwrap(),
        "--svg-dir",
        svg_dir.to_str().unwrap(),
        "--json",
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let written: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(written["session"], summary["session"]);
    assert_eq!(written["champion"], summary["champion"]["iteration"]);
    let charts = written["charts"].as_array().unwrap();
    let svgs = written["svg_files"].as_array().unwrap();
    assert_eq!(svgs.len(), charts.len());
    assert!(charts.len() >= 8, "{charts:?}");
    for svg in svgs {
        let svg = std::fs::read_to_string(svg.as_str().unwrap()).unwrap();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<svg").count(), charts.len());
    // The champion's flags, as the demo printed them, are in the page.
    for flag in summary["champion"]["flags"].as_object().unwrap().keys() {
        assert!(page.contains(flag.as_str()), "{flag} missing");
    }
}

#[test]
fn report_names_a_missing_store_and_an_unknown_session() {
    let empty = tempfile::tempdir().unwrap();
    let run = autodebug(&["report", "--db", empty.path().to_str().unwrap(), "--out", "/dev/null"]);
    assert_eq!(run.status.code(), Some(1));
    let err = text(&run.stderr);
    assert!(err.contains("no experiment store at") && err.contains("autodebug.db"), "{err}");
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0, "no empty store is created");

    let (store_dir, _) = demo();
    let out = tempfile::tempdir().unwrap();
    let html = out.path().join("r.html");
    let run = autodebug(&[
        "report",
        "--db",
        store_dir.to_str().unwrap(),
        "--session",
        "nope",
        "--out",
        html.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(1));
    assert!(text(&run.stderr).contains("no session named `nope`"), "{}", text(&run.stderr));
}

/// Share of pixels that are not (nearly) white, and the image size.
fn ink_share(png_path: &Path) -> (f64, u32, u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png_path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buffer).unwrap();
    let channels = info.color_type.samples();
    let pixels = &buffer[..info.buffer_size()];
    let inked = pixels.chunks(channels).filter(|p| p.iter().take(3).any(|&c| c < 235)).count();
    (inked as f64 / (pixels.len() / channels) as f64, info.width, info.height)
}

#[test]
#[ignore = "needs Chromium: apt-get install chromium (bash .ci/setup.sh), then cargo test --workspace -- --include-ignored"]
fn the_report_renders_in_headless_chromium_and_charts_become_pngs() {
    let chromium = Chromium::find().unwrap_or_else(|| {
        panic!(
            "needs Chromium: apt-get install chromium (or set AUTODEBUG_CHROMIUM), then cargo test --workspace -- --include-ignored"
        )
    });
    let (store_dir, _) = demo();
    let out = tempfile::tempdir().unwrap();
    let html = out.path().join("report.html");
    let png_dir = out.path().join("png");
    let run = autodebug(&[
        "report",
        "--db",
        store_dir.to_str().unwrap(),
        "--out",
        html.to_str().unwrap(),
        "--png-dir",
        png_dir.to_str().unwrap(),
        "--json",
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let written: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let pngs = written["png_files"].as_array().unwrap();
    assert_eq!(pngs.len(), written["charts"].as_array().unwrap().len());
    for png in pngs {
        let (ink, width, _) = ink_share(Path::new(png.as_str().unwrap()));
        assert!(width >= 800 && ink > 0.01, "{png}: {width} px wide, {:.2}% ink", ink * 100.0);
    }

    let load = chromium.dump_dom(&html).unwrap();
    assert!(load.console.is_empty(), "console messages: {:?}", load.console);
    assert!(load.dom.contains("Pareto front") && load.dom.contains("Session log"));

    let shot = out.path().join("page.png");
    let load = chromium.screenshot(&html, &shot, 1280, 2400).unwrap();
    assert!(load.console.is_empty(), "console messages: {:?}", load.console);
    let (ink, width, height) = ink_share(&shot);
    assert_eq!((width, height), (1280, 2400));
    assert!(ink > 0.03, "the page screenshot is nearly blank: {:.2}% ink", ink * 100.0);
}
