//! Pipeline validation: every problem of a graph is reported at once, with the stages named.

use std::time::Duration;

use weir::dsl::{Pipeline, Problem};
use weir::prelude::*;

fn reject() -> Overflow {
    Overflow::Reject {
        retry_after: Duration::from_millis(10),
    }
}

/// Builds and expects the build to fail; returns every problem's message.
fn problems(p: weir::dsl::PipelineBuilder) -> Vec<String> {
    let error = p.build().expect_err("the graph is invalid");
    error.problems.iter().map(ToString::to_string).collect()
}

#[test]
fn start_needs_a_runtime() {
    let mut p = Pipeline::builder("offline");
    let numbers = p.source("numbers", source::from_iter(0..3u32));
    p.sink("store", &numbers, |_| {});
    let error = p.build().unwrap().start().unwrap_err();
    assert_eq!(
        error.to_string(),
        "pipeline `offline`: no tokio runtime (start it within one, or use start_on)"
    );
}

// ---------------------------------------------------------------------------------------------
// Validation: every problem at once, with stage names

#[test]
fn duplicate_names_are_reported() {
    let mut p = Pipeline::builder("dup");
    let a = p.source("read", source::from_iter(0..3u32));
    let b = p.stage("read", &a, |x| x);
    p.sink("read", &b, |_| {});
    assert_eq!(problems(p), vec!["stage name `read` is used by 3 stages"]);
}

#[test]
fn invalid_names_are_reported() {
    let mut p = Pipeline::builder("bad name");
    let a = p.source("9lives", source::from_iter(0..3u32));
    p.sink("store", &a, |_| {});
    assert_eq!(
        problems(p),
        vec![
            "pipeline name: invalid stage name `bad name`: may contain only ASCII letters, digits, `_`, `-` and `.`",
            "invalid stage name `9lives`: must start with an ASCII letter",
        ]
    );
}

#[test]
fn outputs_connected_to_nothing_are_reported() {
    let mut p = Pipeline::builder("loose");
    let a = p.source("numbers", source::from_iter(0..3u32));
    let _unused = p.stage("double", &a, |x| x.map(|x| x * 2));
    assert_eq!(
        problems(p),
        vec!["stage `double`: output is connected to nothing"]
    );
}

#[test]
fn inputs_fed_by_nothing_are_reported() {
    let mut p = Pipeline::builder("unfed");
    let (_feed, retries) = p.junction::<u32>("retries");
    p.sink("store", &retries, |_| {});
    let empty: [&weir::dsl::Port<u32>; 0] = [];
    let all = p.merge("all", empty);
    p.sink("store2", &all, |_| {});
    assert_eq!(
        problems(p),
        vec![
            "stage `retries`: input is fed by nothing",
            "stage `all`: input is fed by nothing",
        ]
    );
}

#[test]
fn cycles_are_reported() {
    let mut p = Pipeline::builder("loop");
    let fresh = p.source("fresh", source::from_iter(0..3u32));
    let (feed, retries) = p.junction::<u32>("retries");
    let all = p.merge("all", [&fresh, &retries]);
    let tried = p.stage("try", &all, |x| x);
    p.connect(&tried, feed);
    // Every output is connected (`try` feeds the junction): the cycle is the only problem.
    let error = p.build().unwrap_err();
    assert_eq!(error.problems.len(), 1);
    assert_eq!(
        error.problems[0].to_string(),
        "cycle: `retries` -> `all` -> `try` -> `retries`"
    );
    assert!(matches!(&error.problems[0], Problem::Cycle { stages } if stages.len() == 4));
}

#[test]
fn zero_capacities_are_reported() {
    let mut p = Pipeline::builder("zero");
    let (_handle, web) = p.ingress::<u32>("web", 0, reject());
    let hop = p.boundary("hop", &web, 0);
    let other = p.source("other", source::from_iter(0..3u32));
    let lanes = p.priority_lanes("lanes", [(&hop, 0, 8), (&other, 1, 0)]);
    let fetched = p.stage_async("fetch", &lanes, 0, |x| async move { x });
    p.sink_async("store", &fetched, 0, |_| async {});
    assert_eq!(
        problems(p),
        vec![
            "stage `web`: capacity must be at least 1",
            "stage `hop`: capacity must be at least 1",
            "stage `lanes`: the weight of the lane from `hop` must be at least 1",
            "stage `lanes`: the capacity of the lane from `other` must be at least 1",
            "stage `fetch`: concurrency must be at least 1",
            "stage `store`: concurrency must be at least 1",
        ]
    );
}

#[test]
fn fan_out_outputs_connected_to_nothing_are_reported() {
    let mut p = Pipeline::builder("shop");
    let orders = p.source("orders", source::from_iter(0..3u64));
    let copies = p.broadcast("copy", &orders, 3, 8, Lagging::Wait);
    p.sink("a", &copies[0], drop);
    p.sink("b", &copies[2], drop);
    let none = p.source("none", source::from_iter(0..3u64));
    let _ = p.partition("split", &none, 0, 8, |id: &u64| *id);
    assert_eq!(
        problems(p),
        [
            "stage `copy`: output 1 of 3 is connected to nothing",
            "stage `split`: the number of outputs must be at least 1",
        ]
    );
}

#[test]
fn fan_out_without_a_fan_out_stage_is_reported() {
    let mut p = Pipeline::builder("split");
    let a = p.source("numbers", source::from_iter(0..3u32));
    p.sink("left", &a, |_| {});
    p.sink("right", &a, |_| {});
    assert_eq!(
        problems(p),
        vec![
            "stage `numbers`: output feeds 2 inputs (`left`, `right`); fan-out needs a broadcast or partition stage"
        ]
    );
}

#[test]
fn ports_of_another_builder_are_reported() {
    let mut other = Pipeline::builder("other");
    let foreign = other.source("numbers", source::from_iter(0..3u32));
    let mut p = Pipeline::builder("mine");
    p.sink("store", &foreign, |_| {});
    assert_eq!(
        problems(p),
        vec![
            "stage `store`: input comes from another pipeline builder",
            "stage `store`: input is fed by nothing",
        ]
    );
    assert_eq!(
        problems(Pipeline::builder("empty")),
        vec!["the pipeline has no stages"]
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut p = Pipeline::builder("messy");
    let (_handle, web) = p.ingress::<u32>("web", 0, reject());
    let parsed = p.stage("parse", &web, |x| x);
    let _dangling = p.stage("parse", &parsed, |x| x);
    let error = p.build().unwrap_err();
    assert_eq!(
        error.to_string(),
        "pipeline `messy` is invalid (3 problems):\n\
         - stage name `parse` is used by 2 stages\n\
         - stage `web`: capacity must be at least 1\n\
         - stage `parse`: output is connected to nothing"
    );
}

// ---------------------------------------------------------------------------------------------
// Drain and abort
