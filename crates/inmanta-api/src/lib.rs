//! inmanta-api
