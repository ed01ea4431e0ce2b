//! `from_env()` of each source. One test in its own binary, because it changes the process
//! environment (nothing else runs in this process meanwhile).

use autodebug_core::TimeWindow;
use autodebug_telemetry::trace::TraceSource;
use autodebug_telemetry::{GraphsignalSource, PrometheusScrape, PrometheusServer};

#[test]
fn sources_read_their_settings_from_the_environment() {
    let home = tempfile::tempdir().unwrap();
    // SAFETY: this binary runs this single test; no other thread reads the environment.
    unsafe {
        std::env::set_var("HOME", home.path());
        std::env::remove_var("GRAPHSIGNAL_API_KEY");
        std::env::set_var("GRAPHSIGNAL_API_BASE", "http://127.0.0.1:9/");
        std::env::remove_var("PROMETHEUS_URL");
        std::env::remove_var("AUTODEBUG_TRACE_DIR");
        std::env::set_var("AUTODEBUG_METRICS_INTERVAL_MS", "soon");
    }

    // No key anywhere: the error says what to set.
    let err = GraphsignalSource::from_env().unwrap_err().to_string();
    assert!(err.contains("GRAPHSIGNAL_API_KEY"), "{err}");

    // The key from ~/.graphsignal/config.yml.
    std::fs::create_dir_all(home.path().join(".graphsignal")).unwrap();
    std::fs::write(home.path().join(".graphsignal/config.yml"), "api_key: file-key\n").unwrap();
    let source = GraphsignalSource::from_env().unwrap();
    assert!(
        source
            .debug_context_url(TimeWindow::new(5, 6))
            .starts_with("http://127.0.0.1:9/api/v1/debug_context/?start_time_ns=5")
    );
    assert!(!format!("{source:?}").contains("file-key"), "the key never prints");

    // The environment wins over the file.
    unsafe { std::env::set_var("GRAPHSIGNAL_API_KEY", "env-key") };
    assert!(GraphsignalSource::from_env().is_ok());

    let err = PrometheusServer::from_env().err().unwrap().to_string();
    assert!(err.contains("PROMETHEUS_URL"), "{err}");
    unsafe { std::env::set_var("PROMETHEUS_URL", "http://prometheus:9090") };
    let server = PrometheusServer::from_env().expect("PROMETHEUS_URL is set");
    assert!(
        server.queries().iter().any(|q| q.promql.contains("vllm:"))
            && server.queries().iter().any(|q| q.promql.contains("sglang:"))
    );
    // A builder's own URL is kept; the environment only fills what is missing.
    let own = PrometheusServer::builder("http://mine:9090").from_env().expect("URL given");
    assert!(format!("{own:?}").contains("http://mine:9090"), "{own:?}");

    let err = TraceSource::from_env().expect_err("AUTODEBUG_TRACE_DIR is unset").to_string();
    assert!(err.contains("AUTODEBUG_TRACE_DIR"), "{err}");

    let err = PrometheusScrape::from_env().err().unwrap().to_string();
    assert!(err.contains("AUTODEBUG_METRICS_INTERVAL_MS") && err.contains("soon"), "{err}");
    unsafe { std::env::set_var("AUTODEBUG_METRICS_INTERVAL_MS", "250") };
    assert!(PrometheusScrape::from_env().is_ok());
}
