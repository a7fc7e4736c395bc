//! migrate-pg
