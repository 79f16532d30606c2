//! Helpers shared by the integration tests.

/// Proptest cases: `default`, or `RUNNEL_PROPTEST_CASES` for a deeper run.
pub fn cases(default: u32) -> u32 {
    std::env::var("RUNNEL_PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default)
}
