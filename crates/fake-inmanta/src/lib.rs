//! fake-inmanta
