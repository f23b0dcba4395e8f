-- Console: the merges that made one customer: each id issued before that now means them, when it was
-- merged in, and the kind of identifier that linked them. Parameter: customer (a current id).
SELECT customer_id AS merged_id,
       fromUnixTimestamp64Milli(toInt64(argMax(version, version)), 'UTC') AS merged_at,
       argMax(identifier_token, version) AS linked_by,
       argMax(merge_event, version) AS merge_event
FROM identity_map
WHERE customer_id IN (SELECT customer_id FROM identity_map WHERE current_id = {customer:String})
  AND customer_id != {customer:String}
GROUP BY customer_id
HAVING argMax(current_id, version) = {customer:String}
ORDER BY merged_at, merged_id
