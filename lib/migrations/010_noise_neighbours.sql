-- Neighbour evidence for the label-noise finder: a job may flag from its documents' neighbours
-- alone (no out-of-fold model, so no oof_score), and every flag names its source.
ALTER TABLE noise_pairs ADD COLUMN neighbour_score DOUBLE;  -- mean cosine to the query's other
                                                            -- relevant minus non-relevant docs
ALTER TABLE noise_pairs ADD COLUMN source VARCHAR;           -- who flagged it (NULL: not flagged)
ALTER TABLE noise_pairs ALTER COLUMN oof_score DROP NOT NULL;
