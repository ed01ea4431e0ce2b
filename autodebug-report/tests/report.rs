//! The report of a real session (a store written by `autodebug demo --iterations 3`), checked as
//! data, as markup, and in a real headless Chromium. The Chromium tests are ignored in a plain
//! `cargo test`; `.ci/setup.sh` installs Chromium and CI includes them, where a missing browser fails.

use std::path::{Path, PathBuf};

use autodebug_core::store::Store;
use autodebug_report::{Chromium, Report};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/demo-session.db");

/// Opens a copy of the fixture: `Store::open` may migrate and writes WAL files next to it.
fn demo_store(dir: &Path) -> Store {
    let path = dir.join("autodebug.db");
    std::fs::copy(FIXTURE, &path).unwrap();
    Store::open(&path).unwrap()
}

#[test]
fn report_shows_every_iteration_the_champion_and_the_cited_signals() {
    let dir = tempfile::tempdir().unwrap();
    let store = demo_store(dir.path());
    let report = Report::from_store(&store, None).unwrap();
    let data = &report.data;
    let champion = data.champion().expect("the demo session has a champion");
    let baseline = data.baseline().expect("the demo session has a baseline");
    assert_ne!(champion.number, baseline.number, "the demo improves on its baseline");

    let names: Vec<&str> = report.charts.iter().map(|c| c.name.as_str()).collect();
    for expected in [
        "objective",
        "ttft-p99",
        "output_throughput",
        "pareto-chat",
        "pareto-concurrent",
        "cdf-ttft-chat",
        "cdf-e2e-concurrent",
        "knobs",
    ] {
        assert!(names.contains(&expected), "missing chart {expected}: {names:?}");
    }
    // Every chart is a standalone SVG document with its title.
    for chart in &report.charts {
        assert!(chart.svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{}", chart.name);
        assert!(chart.svg.ends_with("</svg>"), "{}", chart.name);
        assert!(
            chart.svg.contains(&format!("<title>{}</title>", autodebug_report::svg::escape(&chart.title))),
            "{}",
            chart.name
        );
    }
    // The objective chart has one point per iteration and rings the champion.
    let objective = &report.charts[0];
    assert_eq!(objective.svg.matches("<circle").count(), data.history.iterations.len() + 1);
    assert!(objective.svg.contains(&format!("iteration {}:", champion.number)));
    // The CDFs compare exactly the stored records: n= in the legend is the record count.
    let records =
        store.bench_records(store.latest_session().unwrap().unwrap().id, champion.number, "concurrent").unwrap();
    let cdf = report.charts.iter().find(|c| c.name == "cdf-e2e-concurrent").unwrap();
    assert!(cdf.svg.contains(&format!("champion (#{}), n={}", champion.number, records.len())), "{}", cdf.svg);

    // Every iteration on a Pareto chart is either on the front or names the one that beats it.
    let pareto = report.charts.iter().find(|c| c.name == "pareto-concurrent").unwrap();
    let on_front = pareto.svg.matches(", on the front</title>").count();
    let dominated = pareto.svg.matches(", dominated by #").count();
    assert!(on_front >= 1, "{}", pareto.svg);
    assert_eq!(on_front + dominated, data.history.iterations.iter().filter(|i| i.is_ok()).count());

    let html = report.html();
    assert!(html.starts_with("<!DOCTYPE html>"));
    for forbidden in ["<script", "http://", "https://", "@import", "url("] {
        let outside_svg_namespace = html.replace("http://www.w3.org/2000/svg", "");
        assert!(!outside_svg_namespace.contains(forbidden), "the page must be self-contained; found {forbidden}");
    }
    assert_eq!(html.matches("<svg").count(), report.charts.len());
    // The session log carries each iteration's findings and the signals they cite.
    for iteration in &data.history.iterations {
        for finding in &iteration.analysis.findings {
            for signal in &finding.evidence {
                assert!(
                    html.contains(&autodebug_report::svg::escape(&signal.name)),
                    "signal {} not in the log",
                    signal.name
                );
            }
        }
    }
    assert!(html.contains(&format!("champion #{}", champion.number)));
}

#[test]
fn an_unknown_session_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = demo_store(dir.path());
    let err = Report::from_store(&store, Some("no-such-session")).unwrap_err().to_string();
    assert!(err.contains("no session named `no-such-session`"), "{err}");
    assert!(err.contains("autodebug.db"), "{err}");
}

#[test]
fn svg_files_are_written_one_per_chart() {
    let dir = tempfile::tempdir().unwrap();
    let report = Report::from_store(&demo_store(dir.path()), None).unwrap();
    let out = dir.path().join("charts");
    let paths = report.write_svgs(&out).unwrap();
    assert_eq!(paths.len(), report.charts.len());
    for (path, chart) in paths.iter().zip(&report.charts) {
        assert_eq!(std::fs::read_to_string(path).unwrap(), chart.svg);
    }
}

/// Share of pixels that are not (nearly) white, and the image size.
fn ink_share(png_path: &Path) -> (f64, u32, u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png_path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buffer).unwrap();
    let channels = info.color_type.samples();
    let pixels = &buffer[..info.buffer_size()];
    let total = pixels.len() / channels;
    let inked = pixels.chunks(channels).filter(|p| p.iter().take(3).any(|&c| c < 235)).count();
    (inked as f64 / total as f64, info.width, info.height)
}

const NEEDS_CHROMIUM: &str = "needs Chromium: apt-get install chromium (or set AUTODEBUG_CHROMIUM), \
    then cargo test --workspace -- --include-ignored";

/// The installed headless Chromium; the test fails, naming what to install, when there is none.
fn chromium() -> Chromium {
    Chromium::find().unwrap_or_else(|| panic!("{NEEDS_CHROMIUM} (no Chromium found at the usual paths)"))
}

fn kept(name: &str) -> PathBuf {
    // Kept under the target dir so a person can look at what the browser drew.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("autodebug-report");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
#[ignore = "needs Chromium: apt-get install chromium (bash .ci/setup.sh), then cargo test --workspace -- --include-ignored"]
fn chromium_renders_the_page_without_console_errors() {
    let chromium = chromium();
    let dir = tempfile::tempdir().unwrap();
    let report = Report::from_store(&demo_store(dir.path()), None).unwrap();
    let page = kept("report.html");
    report.write_html(&page).unwrap();

    let load = chromium.dump_dom(&page).unwrap();
    assert!(load.console.is_empty(), "console messages: {:?}", load.console);
    assert_eq!(load.dom.matches("<svg").count(), report.charts.len(), "the browser's DOM holds every chart");
    assert!(load.dom.contains(&report.data.session));

    let shot = kept("report.png");
    let _ = std::fs::remove_file(&shot);
    let load = chromium.screenshot(&page, &shot, 1280, 2400).unwrap();
    assert!(load.console.is_empty(), "console messages: {:?}", load.console);
    let (ink, width, height) = ink_share(&shot);
    assert_eq!((width, height), (1280, 2400));
    assert!(ink > 0.03, "the screenshot is nearly blank: {:.2}% non-white pixels", ink * 100.0);
}

#[test]
#[ignore = "needs Chromium: apt-get install chromium (bash .ci/setup.sh), then cargo test --workspace -- --include-ignored"]
fn charts_rasterize_to_png() {
    let chromium = chromium();
    let dir = tempfile::tempdir().unwrap();
    let report = Report::from_store(&demo_store(dir.path()), None).unwrap();
    let out = kept("png");
    let paths = report.write_pngs(&out, &chromium).unwrap();
    assert_eq!(paths.len(), report.charts.len());
    for (path, chart) in paths.iter().zip(&report.charts) {
        let (ink, width, height) = ink_share(path);
        assert_eq!((width, height), (chart.width * 2, chart.height * 2), "{}", chart.name);
        assert!(ink > 0.01, "{} is nearly blank: {:.2}% ink", chart.name, ink * 100.0);
    }
    let leftovers: Vec<_> =
        std::fs::read_dir(&out).unwrap().filter_map(|e| e.ok()).filter(|e| e.path().is_dir()).collect();
    assert!(leftovers.is_empty(), "staging pages are removed");
}

#[test]
#[ignore = "needs Chromium: apt-get install chromium (bash .ci/setup.sh), then cargo test --workspace -- --include-ignored"]
fn the_console_check_catches_a_broken_page() {
    let chromium = chromium();
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("broken.html");
    std::fs::write(&page, "<!DOCTYPE html><html><body><p>x</p><script>notDefinedAnywhere();</script></body></html>")
        .unwrap();
    let load = chromium.dump_dom(&page).unwrap();
    assert!(load.console.iter().any(|l| l.contains("Uncaught ReferenceError")), "{:?}\n{}", load.console, load.stderr);
}
