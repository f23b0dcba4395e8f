-- Rejected records with where they came from and why.
SELECT component, source, position, error
FROM dead_letters FINAL
ORDER BY component, source, position
