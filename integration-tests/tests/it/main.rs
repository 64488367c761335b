//! End-to-end tests.

mod openai;
