//! tck
