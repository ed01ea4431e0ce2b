//! `SimDeployer` (the simulator deployed in-process) runs the shared deployer conformance suite
//! (`autodebug_core::testing::deployer_conformance`), with a flag the simulated engine rejects as
//! SGLang's argument parser would.

use autodebug_core::testing::deployer_conformance;
use autodebug_core::{Deployer, EngineKind, ServiceSpec};
use autodebug_sim::SimDeployer;

fn good() -> ServiceSpec {
    ServiceSpec::new("sim", EngineKind::Sglang, "qwen1.5-0.5b")
        .with_gpu("H100:1")
        .with_flag("--schedule-policy", Some("lpm"))
        .with_flag("--mem-fraction-static", Some("0.8"))
}

#[tokio::test]
async fn sim_deployer_passes_the_conformance_suite() {
    let deployer = SimDeployer::new().with_seed(3);
    assert_eq!(deployer.name(), "sim");
    deployer_conformance(&deployer, &good(), &good().with_flag("--bogus-flag", None)).await;
}

#[tokio::test]
async fn sim_deployer_passes_with_a_bad_value_of_a_known_flag() {
    let deployer = SimDeployer::new();
    let bad = good().with_flag("--schedule-policy", Some("no-such-policy"));
    deployer_conformance(&deployer, &good(), &bad).await;
}
