//! migrate-core
