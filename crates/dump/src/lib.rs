//! step-dump
