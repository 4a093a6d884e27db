//! [`TestPublisher`]: a publisher under test, erased, that remembers whether it can be subscribed to
//! more than once.

use std::cell::Cell;
use std::fmt;

use weir_runtime::{BoxPublisher, Publisher};

use crate::outcome::{Failure, TckResult};

/// A publisher made by a factory under test, with its type erased.
///
/// `Publisher::subscribe` consumes the publisher, and a publisher that can serve several subscribers is
/// `Clone`. A `TestPublisher` made with [`TestPublisher::cloneable`] hands out a clone for every
/// [`TestPublisher::instance`], so the multi-subscriber rules (1.11) can run; one made with
/// [`TestPublisher::once`] hands out the publisher once, and those rules are skipped. The
/// verification macros pick the right constructor from the factory's return type.
pub struct TestPublisher<T> {
    once: Option<BoxPublisher<T>>,
    cloner: Option<Box<dyn Fn() -> BoxPublisher<T>>>,
    type_name: &'static str,
}

impl<T> fmt::Debug for TestPublisher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestPublisher")
            .field("type", &self.type_name)
            .field("cloneable", &self.cloner.is_some())
            .finish()
    }
}

impl<T: Send + 'static> TestPublisher<T> {
    /// A publisher that can be subscribed to once.
    pub fn once<P: Publisher<T>>(publisher: P) -> Self {
        Self {
            once: Some(publisher.boxed()),
            cloner: None,
            type_name: std::any::type_name::<P>(),
        }
    }

    /// A publisher whose clones all serve subscribers.
    pub fn cloneable<P: Publisher<T> + Clone>(publisher: P) -> Self {
        Self {
            once: None,
            cloner: Some(Box::new(move || publisher.clone().boxed())),
            type_name: std::any::type_name::<P>(),
        }
    }

    /// Whether [`TestPublisher::instance`] can be called more than once.
    pub fn is_cloneable(&self) -> bool {
        self.cloner.is_some()
    }

    /// The publisher's type, for messages.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// The publisher to subscribe to: a fresh clone, or the publisher itself the first time.
    pub fn instance(&mut self) -> TckResult<BoxPublisher<T>> {
        if let Some(cloner) = &self.cloner {
            return Ok(cloner());
        }
        self.once.take().ok_or_else(|| {
            Failure::new(format!(
                "{} is not Clone: subscribe consumed it, it cannot be subscribed to again",
                self.type_name
            ))
        })
    }
}

/// Autoref specialisation behind the verification macros: `(&&Autoref::new(p)).make_test_publisher()`
/// makes a [`TestPublisher::cloneable`] when `p` is `Clone`, a [`TestPublisher::once`] otherwise.
#[doc(hidden)]
pub struct Autoref<P>(Cell<Option<P>>);

impl<P> fmt::Debug for Autoref<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Autoref")
    }
}

impl<P> Autoref<P> {
    #[doc(hidden)]
    pub fn new(publisher: P) -> Self {
        Self(Cell::new(Some(publisher)))
    }

    fn take(&self) -> P {
        self.0
            .take()
            .expect("Autoref::make_test_publisher is called once")
    }
}

#[doc(hidden)]
pub trait ViaClone<T> {
    fn make_test_publisher(&self) -> TestPublisher<T>;
}

impl<T: Send + 'static, P: Publisher<T> + Clone> ViaClone<T> for &Autoref<P> {
    fn make_test_publisher(&self) -> TestPublisher<T> {
        TestPublisher::cloneable(self.take())
    }
}

#[doc(hidden)]
pub trait ViaOnce<T> {
    fn make_test_publisher(&self) -> TestPublisher<T>;
}

impl<T: Send + 'static, P: Publisher<T>> ViaOnce<T> for Autoref<P> {
    fn make_test_publisher(&self) -> TestPublisher<T> {
        TestPublisher::once(self.take())
    }
}
