-- A ranking page reads a region's first dossiers in score order through dossier_rank, and
-- fetched each one's heap row for the page's columns: over the bench's 100 000 dossiers the
-- query took 0.63 ms, 0.33 of it in that scan. With the page's columns in the index the scan is
-- index-only (the visibility map permitting): 0.34 ms in all, and 16 % more rankings a second
-- at 16 connections. State and scores were indexed already, so only a change of the labels, the
-- opinion or the title gives up a HOT update to these columns: an instructor's action, rare.
DROP INDEX dossier_rank;
CREATE INDEX dossier_rank ON dossier (wave, region, score1 DESC NULLS LAST, id)
    INCLUDE (title, state, labels, opinion, spread1, withdrawn);
DROP INDEX dossier_rank2;
CREATE INDEX dossier_rank2 ON dossier (wave, region, score2 DESC NULLS LAST, id)
    INCLUDE (title, state, labels, opinion, spread2, withdrawn);
