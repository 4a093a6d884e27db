//! The macros that turn one line per verified type into one `#[test]` per rule.

/// Generates a module `$name` with one `#[test]` per publisher rule ([`crate::publisher::RULES`]) for the
/// publishers made by `$factory`, a closure from the number of elements (`u64`) to anything that
/// implements `Publisher<T>`.
///
/// Options, after the factory, as `key = value` (each is the [`PublisherVerification`](crate::PublisherVerification)
/// method of that name): `failed = Some(|| failed_publisher)` (or `failed = None`, the default),
/// `max_elements = n`, `completes = false`, `bounded_depth = n`, `skip_stochastic = true`,
/// `stochastic_iterations = n`. If the factory's publisher type is `Clone`, the multi-subscriber rules
/// (1.11) subscribe clones of it; otherwise they are skipped.
///
/// Every test builds a multi-thread tokio runtime, enters it and runs the rule on the test thread
/// ([`crate::run`]). The module also gets a `RULES` constant listing what it generated.
///
/// ```
/// use weir_runtime::{Error, source};
///
/// weir_tck::publisher_verification!(
///     from_iter,
///     |n: u64| source::from_iter(0..n),
///     failed = Some(|| source::error::<u64>(Error::msg("boom"))),
/// );
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! publisher_verification {
    ($name:ident, $factory:expr $(, $($options:tt)*)?) => {
        $crate::__publisher_rules! {
            __tck_suite { $name, [publisher $factory], [$($($options)*)?], }
        }
    };
}

/// Generates a module `$name` with one `#[test]` per blackbox subscriber rule
/// ([`crate::blackbox::RULES`]) for the subscribers made by `$factory`, a closure with no argument
/// returning anything that implements `Subscriber<T>` (`T:` [`Element`](crate::Element)).
///
/// ```
/// use weir_runtime::sink::Fold;
///
/// weir_tck::subscriber_blackbox_verification!(fold, || Fold::new(0u64, |sum, x: u64| *sum += x).0);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! subscriber_blackbox_verification {
    ($name:ident, $factory:expr $(, $($options:tt)*)?) => {
        $crate::__blackbox_rules! {
            __tck_suite { $name, [blackbox $factory], [$($($options)*)?], }
        }
    };
}

/// Generates a module `$name` with one `#[test]` per whitebox subscriber rule
/// ([`crate::whitebox::RULES`]) for the subscribers made by `$factory`, a closure from a
/// [`WhiteboxProbe<T>`](crate::WhiteboxProbe) to anything that implements `Subscriber<T>` and feeds
/// the probe (most simply `probe.wrap(subscriber)`).
///
/// ```
/// use weir_runtime::sink::Fold;
/// use weir_tck::WhiteboxProbe;
///
/// weir_tck::subscriber_whitebox_verification!(fold, |probe: WhiteboxProbe<u64>| {
///     probe.wrap(Fold::new(0u64, |sum, x: u64| *sum += x).0)
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! subscriber_whitebox_verification {
    ($name:ident, $factory:expr $(, $($options:tt)*)?) => {
        $crate::__whitebox_rules! {
            __tck_suite { $name, [whitebox $factory], [$($($options)*)?], }
        }
    };
}

/// Generates a module `$name` with one `#[test]` per identity-processor rule
/// ([`crate::processor::rules`]) for the processors made by `$factory`, a closure from the buffer size
/// (`usize`) to the processor's two ends, `(subscriber end, publisher end)`.
///
/// Options: `buffer_size = n` (default 16), `max_elements = n`, `max_supported_subscribers = n`
/// (default 1), `failed = Some(|| publisher)` / `failed = None` (default: the processor fed by
/// `source::error`), `bounded_depth = n`, `skip_stochastic = true`, `stochastic_iterations = n`.
///
/// ```
/// use weir_runtime::boundary::{self, BoundaryConfig};
///
/// weir_tck::identity_processor_verification!(boundary_processor, |buffer: usize| {
///     boundary::processor::<u64>(BoundaryConfig::new("tck", buffer).unwrap())
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! identity_processor_verification {
    ($name:ident, $factory:expr $(, $($options:tt)*)?) => {
        $crate::__publisher_rules! {
            __tck_processor_suite { $name, [processor $factory], [$($($options)*)?], }
        }
    };
}

/// The identity processor's suite: the publisher rules (already in the arguments), then the
/// whitebox rules, then its own.
#[doc(hidden)]
#[macro_export]
macro_rules! __tck_processor_suite {
    ($name:ident, $build:tt, $options:tt, $($rule:ident),* $(,)?) => {
        $crate::__whitebox_rules! {
            __tck_processor_suite_own { $name, $build, $options, $($rule,)* }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __tck_processor_suite_own {
    ($name:ident, $build:tt, $options:tt, $($rule:ident),* $(,)?) => {
        $crate::__processor_rules! {
            __tck_suite { $name, $build, $options, $($rule,)* }
        }
    };
}

/// One module, one `#[test]` per rule.
#[doc(hidden)]
#[macro_export]
macro_rules! __tck_suite {
    ($name:ident, $build:tt, $options:tt, $($rule:ident),* $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            /// The rules generated in this module.
            #[allow(dead_code)]
            pub(super) const RULES: &[&str] = &[$(stringify!($rule)),*];

            $(
                #[test]
                fn $rule() {
                    $crate::run(concat!(module_path!(), "::", stringify!($rule)), |env| {
                        $crate::__tck_options!($crate::__tck_build!($build, env), $options).$rule()
                    });
                }
            )*
        }
    };
}

/// Builds the verification of a suite from its factory.
#[doc(hidden)]
#[macro_export]
macro_rules! __tck_build {
    ([publisher $factory:expr], $env:ident) => {
        $crate::PublisherVerification::from_test_publishers($env, {
            let factory = $factory;
            move |elements: u64| {
                #[allow(unused_imports)]
                use $crate::__private::{ViaClone as _, ViaOnce as _};
                #[allow(clippy::needless_borrow)]
                let publisher =
                    (&&$crate::__private::Autoref::new(factory(elements))).make_test_publisher();
                publisher
            }
        })
    };
    ([blackbox $factory:expr], $env:ident) => {
        $crate::SubscriberBlackboxVerification::new($env, $factory)
    };
    ([whitebox $factory:expr], $env:ident) => {
        $crate::SubscriberWhiteboxVerification::new($env, $factory)
    };
    ([processor $factory:expr], $env:ident) => {
        $crate::IdentityProcessorVerification::from_parts($env, {
            let factory = $factory;
            move |buffer_size: usize| {
                #[allow(unused_imports)]
                use $crate::__private::{ViaClone as _, ViaOnce as _};
                let (subscriber, publisher) = factory(buffer_size);
                #[allow(clippy::needless_borrow)]
                let publisher =
                    (&&$crate::__private::Autoref::new(publisher)).make_test_publisher();
                (subscriber, publisher)
            }
        })
    };
}

/// Applies `key = value` options as builder calls.
#[doc(hidden)]
#[macro_export]
macro_rules! __tck_options {
    ($builder:expr, []) => {
        $builder
    };
    ($builder:expr, [failed = None $(, $($rest:tt)*)?]) => {
        $crate::__tck_options!($builder.without_failed(), [$($($rest)*)?])
    };
    ($builder:expr, [failed = Some($failed:expr) $(, $($rest:tt)*)?]) => {
        $crate::__tck_options!($builder.failed($failed), [$($($rest)*)?])
    };
    ($builder:expr, [$key:ident = $value:expr $(, $($rest:tt)*)?]) => {
        $crate::__tck_options!($builder.$key($value), [$($($rest)*)?])
    };
}
