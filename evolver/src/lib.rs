//! The evolver: a background job that mines all users' trajectories into better shared
//! skills. It depends on `agent` only and sees storage and the engine through traits, so
//! its pipeline can be tested with scripted parts.
