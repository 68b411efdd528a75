-- Label-noise finder: jobs (out-of-fold scoring run by a detached worker), every scored pair with
-- its flag, reviewer decisions, and the change log of relabelled dataset versions (which are
-- rows of dataset_versions with kind 'relabelled': the same versioning as mining).
CREATE TABLE noise_jobs (
    job_id        VARCHAR PRIMARY KEY,
    dataset_id    VARCHAR NOT NULL,
    split_id      VARCHAR NOT NULL,
    options       VARCHAR NOT NULL,          -- JSON (NoiseOptions)
    status        VARCHAR NOT NULL,          -- queued|starting|running|finished|stopped|failed
    created_at    TIMESTAMP DEFAULT current_timestamp,
    finished_at   TIMESTAMP,
    pairs_scored  BIGINT,
    flagged       BIGINT,
    error         VARCHAR
);

-- One row per scored training pair (flagged or not): the query's other pairs come from here.
CREATE TABLE noise_pairs (
    job_id         VARCHAR NOT NULL,
    query_id       VARCHAR NOT NULL,
    doc_id         VARCHAR NOT NULL,
    line           BIGINT NOT NULL,          -- the pair's line in the dataset
    label          INTEGER NOT NULL,
    fold           INTEGER NOT NULL,
    oof_score      DOUBLE NOT NULL,          -- out-of-fold cross-encoder score
    baseline_score DOUBLE,                   -- zero-shot bi-encoder cosine (when computed)
    rank_in_query  INTEGER NOT NULL,         -- 1 = the model's top pair of the query
    strength       DOUBLE,                   -- NULL = not flagged
    reason         VARCHAR,
    flag_rank      INTEGER,                  -- 1 = strongest flag of the job
    PRIMARY KEY (job_id, query_id, doc_id, line)
);

CREATE TABLE noise_decisions (
    job_id      VARCHAR NOT NULL,
    query_id    VARCHAR NOT NULL,
    doc_id      VARCHAR NOT NULL,
    decision    VARCHAR NOT NULL,            -- keep|relabel|drop|ambiguous
    new_label   INTEGER,                     -- for relabel
    decided_by  VARCHAR,
    decided_at  TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (job_id, query_id, doc_id)
);

-- What a relabelled version changed against its parent, pair by pair.
CREATE TABLE label_changes (
    dataset_id  VARCHAR NOT NULL,            -- the new version
    parent_id   VARCHAR NOT NULL,
    query_id    VARCHAR NOT NULL,
    doc_id      VARCHAR NOT NULL,
    line        BIGINT NOT NULL,
    action      VARCHAR NOT NULL,            -- relabel|drop|ambiguous
    old_label   INTEGER NOT NULL,
    new_label   INTEGER,                     -- NULL when dropped
    changed_by  VARCHAR NOT NULL,
    changed_at  TIMESTAMP DEFAULT current_timestamp,
    job_id      VARCHAR                      -- the noise job the flag came from, if any
);
