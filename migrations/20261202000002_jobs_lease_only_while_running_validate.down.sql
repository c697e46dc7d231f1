-- Validation has nothing to undo; the previous migration's down drops the constraint.
SELECT 1;
