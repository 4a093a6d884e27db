//! The rule lists, each written once as a macro that hands its names to a callback macro: the
//! `*_verification!` macros generate one test per name, the `RULES` constants are the names as
//! strings, and the identity processor delegates its publisher and whitebox rules by name.

/// The publisher rules, in the Java TCK's order: calls `$crate::$callback!` with `$args` followed by the rule names (one list, used by
/// the generating macros, the `RULES` constants and the processor's delegates).
#[doc(hidden)]
#[macro_export]
macro_rules! __publisher_rules {
    ($callback:ident { $($args:tt)* }) => {
        $crate::$callback! {
            $($args)*
            required_validate_max_elements_from_publisher,
            required_validate_bounded_depth_of_on_next_and_request_recursion,
            required_create_publisher1_must_produce_a_stream_of_exactly1_element,
            required_create_publisher3_must_produce_a_stream_of_exactly3_elements,
            required_spec101_subscription_request_must_result_in_the_correct_number_of_produced_elements,
            required_spec102_may_signal_less_than_requested_and_terminate_subscription,
            stochastic_spec103_must_signal_on_methods_sequentially,
            optional_spec104_must_signal_on_error_when_fails,
            required_spec105_must_signal_on_complete_when_finite_stream_terminates,
            optional_spec105_empty_stream_must_terminate_by_signalling_on_complete,
            untested_spec106_must_consider_subscription_cancelled_after_on_error_or_on_complete_has_been_called,
            required_spec107_must_not_emit_further_signals_once_on_complete_has_been_signalled,
            untested_spec107_must_not_emit_further_signals_once_on_error_has_been_signalled,
            untested_spec108_possibly_canceled_subscription_should_not_receive_on_error_or_on_complete_signals,
            required_spec109_must_issue_on_subscribe_for_non_null_subscriber,
            untested_spec109_subscribe_should_not_throw_non_fatal_throwable,
            required_spec109_subscribe_throw_npe_on_null_subscriber,
            required_spec109_may_reject_calls_to_subscribe_if_publisher_is_unable_or_unwilling_to_serve_them_rejection_must_trigger_on_error_after_on_subscribe,
            untested_spec110_reject_a_subscription_request_if_the_same_subscriber_subscribes_twice,
            optional_spec111_may_support_multi_subscribe,
            optional_spec111_registered_subscribers_must_receive_on_next_or_on_complete_signals,
            optional_spec111_multicast_must_produce_the_same_elements_in_the_same_sequence_to_all_of_its_subscribers_when_requesting_one_by_one,
            optional_spec111_multicast_must_produce_the_same_elements_in_the_same_sequence_to_all_of_its_subscribers_when_requesting_many_upfront,
            optional_spec111_multicast_must_produce_the_same_elements_in_the_same_sequence_to_all_of_its_subscribers_when_requesting_many_upfront_and_complete_as_expected,
            required_spec302_must_allow_synchronous_request_calls_from_on_next_and_on_subscribe,
            required_spec303_must_not_allow_unbounded_recursion,
            untested_spec304_request_should_not_perform_heavy_computations,
            untested_spec305_cancel_must_not_synchronously_perform_heavy_computation,
            required_spec306_after_subscription_is_cancelled_request_must_be_nops,
            required_spec307_after_subscription_is_cancelled_additional_cancelations_must_be_nops,
            required_spec309_request_zero_must_signal_error,
            required_spec309_request_negative_number_must_signal_error,
            optional_spec309_request_negative_number_may_signal_error_with_specific_message,
            required_spec312_cancel_must_make_the_publisher_to_eventually_stop_signaling,
            required_spec313_cancel_must_make_the_publisher_eventually_drop_all_references_to_the_subscriber,
            required_spec317_must_support_a_pending_element_count_up_to_long_max_value,
            required_spec317_must_support_a_cumulative_pending_element_count_up_to_long_max_value,
            required_spec317_must_not_signal_on_error_when_pending_above_long_max_value,
        }
    };
}

/// The blackbox subscriber rules, in the Java TCK's order: calls `$crate::$callback!` with `$args` followed by the rule names (one list, used by
/// the generating macros, the `RULES` constants and the processor's delegates).
#[doc(hidden)]
#[macro_export]
macro_rules! __blackbox_rules {
    ($callback:ident { $($args:tt)* }) => {
        $crate::$callback! {
            $($args)*
            required_spec201_blackbox_must_signal_demand_via_subscription_request,
            untested_spec202_blackbox_should_asynchronously_dispatch,
            required_spec203_blackbox_must_not_call_methods_on_subscription_or_publisher_in_on_complete,
            required_spec203_blackbox_must_not_call_methods_on_subscription_or_publisher_in_on_error,
            untested_spec204_blackbox_must_consider_the_subscription_as_cancelled_in_after_recieving_on_complete_or_on_error,
            required_spec205_blackbox_must_call_subscription_cancel_if_it_already_has_an_subscription_and_receives_another_on_subscribe_signal,
            untested_spec206_blackbox_must_call_subscription_cancel_if_it_is_no_longer_valid,
            untested_spec207_blackbox_must_ensure_all_calls_on_its_subscription_take_place_from_the_same_thread_or_take_care_of_synchronization,
            untested_spec208_blackbox_must_be_prepared_to_receive_on_next_signals_after_having_called_subscription_cancel,
            required_spec209_blackbox_must_be_prepared_to_receive_an_on_complete_signal_with_preceding_request_call,
            required_spec209_blackbox_must_be_prepared_to_receive_an_on_complete_signal_without_preceding_request_call,
            required_spec210_blackbox_must_be_prepared_to_receive_an_on_error_signal_with_preceding_request_call,
            required_spec210_blackbox_must_be_prepared_to_receive_an_on_error_signal_without_preceding_request_call,
            untested_spec211_blackbox_must_make_sure_that_all_calls_on_its_methods_happen_before_the_processing_of_the_respective_events,
            untested_spec212_blackbox_must_not_call_on_subscribe_more_than_once_based_on_object_equality,
            untested_spec213_blackbox_failing_on_signal_invocation,
            required_spec213_blackbox_on_subscribe_must_throw_null_pointer_exception_when_parameters_are_null,
            required_spec213_blackbox_on_next_must_throw_null_pointer_exception_when_parameters_are_null,
            required_spec213_blackbox_on_error_must_throw_null_pointer_exception_when_parameters_are_null,
            untested_spec301_blackbox_must_not_be_called_outside_subscriber_context,
            untested_spec308_blackbox_request_must_register_given_number_elements_to_be_produced,
            untested_spec310_blackbox_request_may_synchronously_call_on_next_on_subscriber,
            untested_spec311_blackbox_request_may_synchronously_call_on_complete_or_on_error,
            untested_spec314_blackbox_cancel_may_cause_the_publisher_to_shutdown_if_no_other_subscription_exists,
            untested_spec315_blackbox_cancel_must_not_throw_exception_and_must_signal_on_error,
            untested_spec316_blackbox_request_must_not_throw_exception_and_must_on_error_the_subscriber,
        }
    };
}

/// The whitebox subscriber rules, in the Java TCK's order: calls `$crate::$callback!` with `$args` followed by the rule names (one list, used by
/// the generating macros, the `RULES` constants and the processor's delegates).
#[doc(hidden)]
#[macro_export]
macro_rules! __whitebox_rules {
    ($callback:ident { $($args:tt)* }) => {
        $crate::$callback! {
            $($args)*
            required_exercise_whitebox_happy_path,
            required_spec201_must_signal_demand_via_subscription_request,
            untested_spec202_should_asynchronously_dispatch,
            required_spec203_must_not_call_methods_on_subscription_or_publisher_in_on_complete,
            required_spec203_must_not_call_methods_on_subscription_or_publisher_in_on_error,
            untested_spec204_must_consider_the_subscription_as_cancelled_in_after_recieving_on_complete_or_on_error,
            required_spec205_must_call_subscription_cancel_if_it_already_has_an_subscription_and_receives_another_on_subscribe_signal,
            untested_spec206_must_call_subscription_cancel_if_it_is_no_longer_valid,
            untested_spec207_must_ensure_all_calls_on_its_subscription_take_place_from_the_same_thread_or_take_care_of_synchronization,
            required_spec208_must_be_prepared_to_receive_on_next_signals_after_having_called_subscription_cancel,
            required_spec209_must_be_prepared_to_receive_an_on_complete_signal_with_preceding_request_call,
            required_spec209_must_be_prepared_to_receive_an_on_complete_signal_without_preceding_request_call,
            required_spec210_must_be_prepared_to_receive_an_on_error_signal_with_preceding_request_call,
            required_spec210_must_be_prepared_to_receive_an_on_error_signal_without_preceding_request_call,
            untested_spec211_must_make_sure_that_all_calls_on_its_methods_happen_before_the_processing_of_the_respective_events,
            untested_spec212_must_not_call_on_subscribe_more_than_once_based_on_object_equality_spec_violation,
            untested_spec213_failing_on_signal_invocation,
            required_spec213_on_subscribe_must_throw_null_pointer_exception_when_parameters_are_null,
            required_spec213_on_next_must_throw_null_pointer_exception_when_parameters_are_null,
            required_spec213_on_error_must_throw_null_pointer_exception_when_parameters_are_null,
            untested_spec301_must_not_be_called_outside_subscriber_context,
            required_spec308_request_must_register_given_number_elements_to_be_produced,
            untested_spec310_request_may_synchronously_call_on_next_on_subscriber,
            untested_spec311_request_may_synchronously_call_on_complete_or_on_error,
            untested_spec314_cancel_may_cause_the_publisher_to_shutdown_if_no_other_subscription_exists,
            untested_spec315_cancel_must_not_throw_exception_and_must_signal_on_error,
            untested_spec316_request_must_not_throw_exception_and_must_on_error_the_subscriber,
        }
    };
}

/// The identity processor's own rules (after the publisher and whitebox rules): calls `$crate::$callback!` with `$args` followed by the rule names (one list, used by
/// the generating macros, the `RULES` constants and the processor's delegates).
#[doc(hidden)]
#[macro_export]
macro_rules! __processor_rules {
    ($callback:ident { $($args:tt)* }) => {
        $crate::$callback! {
            $($args)*
            required_spec104_must_call_on_error_on_all_its_subscribers_if_it_encounters_a_non_recoverable_error,
            must_immediately_pass_on_on_error_events_received_from_its_upstream_to_its_downstream,
            required_must_request_from_upstream_for_elements_that_have_been_requested_long_ago,
        }
    };
}

/// The names as a `&[&str]`.
#[doc(hidden)]
#[macro_export]
macro_rules! __tck_names {
    ($($rule:ident),* $(,)?) => {
        &[$(stringify!($rule)),*]
    };
}

/// Generates the rule methods that delegate to another verification.
#[doc(hidden)]
#[macro_export]
macro_rules! __tck_delegate {
    ($verification:ident: $($rule:ident),* $(,)?) => {
        $(
            #[doc = concat!(
                "Delegated to the ",
                stringify!($verification),
                " of the processor (`",
                stringify!($rule),
                "`)."
            )]
            pub fn $rule(&self) -> Outcome {
                self.$verification().$rule()
            }
        )*
    };
}
