//! End-to-end tests.

mod tools;
