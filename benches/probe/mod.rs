//! The probe mode of the `chain`, `operators`, `dsl` and `boundary` benches: one run of one
//! variant, for instruction counts under callgrind (stable on a noisy machine).
//! `WEIR_<BENCH>_PROBE=<variant>` selects it, `WEIR_<BENCH>_PROBE_ITEMS` the item count (1 M by
//! default); the difference between two item counts, divided by their difference, is the cost per
//! item.

use criterion::Criterion;

/// A bench binary's `main`: the criterion benches, or, when `var` is set, one probe run of the
/// variant it names (`run` gets the variant, the item count and a current-thread runtime, and
/// returns the sum, or `None` for a variant it does not know: listed in the panic with `known`).
pub(crate) fn main_or_probe(
    var: &str,
    benches: fn(),
    known: &str,
    run: impl FnOnce(&str, u64, &tokio::runtime::Runtime) -> Option<u64>,
) {
    let Some((variant, n)) = requested(var) else {
        benches();
        Criterion::default().configure_from_args().final_summary();
        return;
    };
    let runtime = runtime();
    let Some(sum) = run(&variant, std::hint::black_box(n), &runtime) else {
        panic!("{var}: `{variant}` is not one of {known}");
    };
    println!("{variant}: {n} items, sum {sum}");
}

/// The variant and item count the environment variable `var` asks for, or `None` (run the benches).
fn requested(var: &str) -> Option<(String, u64)> {
    let probe = std::env::var(var).ok()?;
    let items = std::env::var(format!("{var}_ITEMS"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    Some((probe, items))
}

/// The runtime a probe runs on: one thread, with timers.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}
