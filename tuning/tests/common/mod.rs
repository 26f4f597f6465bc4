//! Helpers shared by the storage test binaries (each uses part of them).
#![allow(dead_code)]

pub mod suite;
pub mod workers;
