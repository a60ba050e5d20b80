//! Services: what sits between HTTP and storage.

pub mod accounts;
pub mod evolver;
pub mod models;
pub mod nodes;
pub mod quota;
pub mod skills;
pub mod turns;
