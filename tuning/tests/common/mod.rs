//! Helpers shared by the storage and sampler test binaries (each uses part of them).
#![allow(dead_code)]

pub mod functions;
pub mod suite;
pub mod workers;
