//! [`Element`]: how the subscriber and processor verifications make the items they send.

use std::fmt::Debug;

/// An item type the subscriber and processor verifications can make: the Java TCK's
/// `createElement(int)`. `element(i)` must differ for different `i` (the processor rules check that
/// items come out as they went in).
///
/// Implemented for the integer types and `String`; implement it for your own item types.
pub trait Element: Clone + Debug + PartialEq + Send + 'static {
    /// The `index`-th element.
    fn element(index: u64) -> Self;
}

macro_rules! integer_elements {
    ($($t:ty),*) => {
        $(
            impl Element for $t {
                #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
                fn element(index: u64) -> Self {
                    index as $t
                }
            }
        )*
    };
}

integer_elements!(u16, u32, u64, u128, usize, i16, i32, i64, i128, isize);

impl Element for String {
    fn element(index: u64) -> Self {
        index.to_string()
    }
}
