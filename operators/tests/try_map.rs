//! `try_map` takes any error that converts into `Box<dyn Error + Send + Sync>`: the stream fails
//! naming the stage, and the original error stays reachable through `Error::source`.

use std::error::Error as _;

use weir_operators::PublisherExt;
use weir_runtime::{Error, ErrorKind, source};

/// Runs `0..5` through `f` and returns the stream's error.
async fn fail_with<E>(f: impl FnMut(u32) -> Result<u32, E> + Send + 'static) -> Error
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    source::from_iter(0..5u32)
        .try_map(f)
        .collect()
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_string_error_is_the_message_and_the_source() {
    let error = fail_with(|x| {
        if x < 3 {
            Ok(x)
        } else {
            Err(format!("bad row {x}"))
        }
    })
    .await;
    assert_eq!(error.to_string(), "stage `try_map`: bad row 3");
    assert_eq!(error.source().unwrap().to_string(), "bad row 3");
    let error = fail_with(|_| Err::<u32, _>("refused")).await;
    assert_eq!(error.to_string(), "stage `try_map`: refused");
}

#[tokio::test]
async fn a_boxed_error_keeps_the_original_as_its_source() {
    let error = fail_with(|x| {
        "x".parse::<u32>()
            .map(|_| x)
            .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
    })
    .await;
    assert_eq!(error.stage(), Some("try_map"));
    assert!(matches!(error.kind(), ErrorKind::Failed(_)));
    let source = error.source().expect("a source");
    assert!(source.is::<std::num::ParseIntError>(), "{source:?}");
}

#[tokio::test]
async fn an_anyhow_error_keeps_its_message_and_chain() {
    let error = fail_with(|x| -> anyhow::Result<u32> {
        let parsed: u32 = "x".parse()?;
        Ok(parsed + x)
    })
    .await;
    assert_eq!(
        error.to_string(),
        "stage `try_map`: invalid digit found in string"
    );
    // anyhow hands over its own box (a private type): the message and the chain stay.
    assert_eq!(
        error.source().unwrap().to_string(),
        "invalid digit found in string"
    );

    let error = fail_with(|x| {
        anyhow::Context::context("x".parse::<u32>().map(|p| p + x), "reading the count")
    })
    .await;
    assert_eq!(error.to_string(), "stage `try_map`: reading the count");
    let cause = error
        .source()
        .unwrap()
        .source()
        .expect("the context keeps its cause");
    assert!(cause.is::<std::num::ParseIntError>());
}

#[tokio::test]
async fn a_weir_error_passes_through_and_gets_the_stage_if_it_had_none() {
    let error = fail_with(|_| Err::<u32, _>(Error::msg("quota exceeded"))).await;
    assert_eq!(error.to_string(), "stage `try_map`: quota exceeded");
    assert!(matches!(error.kind(), ErrorKind::Message(_)));
    let error = fail_with(|_| Err::<u32, _>(Error::msg("quota exceeded").in_stage("quota"))).await;
    assert_eq!(error.to_string(), "stage `quota`: quota exceeded");
}
