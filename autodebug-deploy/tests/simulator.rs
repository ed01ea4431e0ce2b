//! The shared deployer conformance suite against the autodebug simulator, run by the local
//! deployer exactly as `autodebug sim serve` would be. The simulator binary is built from this
//! workspace when needed; a failure to build it fails the test.

mod support;

use std::time::Duration;

use autodebug_core::testing::deployer_conformance;
use autodebug_core::{Deployer, EngineKind, ServiceSpec};
use autodebug_deploy::LocalDeployer;

fn sim_spec() -> ServiceSpec {
    ServiceSpec::new("sim", EngineKind::Sglang, "qwen1.5-0.5b")
        .with_gpu("H100:1")
        .with_flag("--schedule-policy", Some("lpm"))
}

#[tokio::test]
async fn simulator_passes_the_conformance_suite() {
    let sim = support::simulator();
    let deployer = LocalDeployer::simulator(sim);
    let bad = sim_spec().with_flag("--bogus-flag", None);
    deployer_conformance(&deployer, &sim_spec(), &bad).await;
    assert!(deployer.running_pids().is_empty());
}

#[tokio::test]
async fn simulator_rejects_an_unknown_flag_quoting_itself() {
    let sim = support::simulator();
    let deployer = LocalDeployer::simulator(sim);
    let deployment = deployer.deploy(&sim_spec().with_flag("--bogus-flag", None)).await.unwrap();
    let err = deployer.wait_ready(&deployment, Duration::from_secs(120)).await.unwrap_err();
    assert!(matches!(err, autodebug_core::Error::Deploy { .. }), "expected an exit, not a timeout: {err}");
    assert_eq!(err.kind(), autodebug_core::ErrorKind::RejectedConfig, "{err}");
    let logs = deployer.logs(&deployment, None).await.unwrap();
    assert!(!logs.is_empty(), "the simulator said nothing when refusing a flag");
    assert!(err.to_string().contains(&logs.last().unwrap().text), "{err}");
    deployer.teardown(&deployment).await.unwrap();
}
