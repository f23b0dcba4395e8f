-- IT and operations: dead letters by connector (or the component that refused them) and reason, the most frequent first; numbers in reasons folded to N, so that one cause is one row.
SELECT
    if(startsWith(component, 'connector:'), substring(component, 11), component) AS connector,
    replaceRegexpAll(substring(error, 1, 120), '[0-9]+', 'N') AS reason,
    count() AS records
FROM dead_letters FINAL
GROUP BY connector, reason
ORDER BY records DESC, connector, reason
