//! The evolver: a background job that mines all users' trajectories into better shared
//! skills. It depends on `agent` only and sees storage and the engine through traits, so
//! its pipeline can be tested with scripted parts.

pub mod group;
pub mod pipeline;
pub mod redact;
pub mod safety;
pub mod store;
pub mod testing;

pub use pipeline::{Evolver, EvolverConfig, ReviewError, RunError};
pub use store::{
    CandidateRecord, DecisionReport, EvolverStore, ReplayCase, RunReport, SessionSummary, SessionTrace, SkillText, StepReport,
    SummaryRecord, Verdict,
};
