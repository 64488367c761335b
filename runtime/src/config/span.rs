//! Locating entities in the config text.
