//! The probe mode of the `chain`, `operators` and `dsl` benches: one run of one variant, for
//! instruction counts under callgrind (stable on a noisy machine). `WEIR_<BENCH>_PROBE=<variant>`
//! selects it, `WEIR_<BENCH>_PROBE_ITEMS` the item count (1 M by default); the difference between
//! two item counts, divided by their difference, is the cost per item.

/// The variant and item count the environment variable `var` asks for, or `None` (run the benches).
pub(crate) fn requested(var: &str) -> Option<(String, u64)> {
    let probe = std::env::var(var).ok()?;
    let items = std::env::var(format!("{var}_ITEMS"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    Some((probe, items))
}

/// The runtime a probe runs on: one thread, with timers.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}
