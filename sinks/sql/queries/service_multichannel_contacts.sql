-- Customer service: customers who contacted support on several channels (phone, email, Facebook, chat), with their tickets.
SELECT
    customer_id,
    arraySort(groupUniqArray(JSONExtractString(payload_json, 'attributes', 'contact_channel'))) AS contact_channels,
    uniqExact(JSONExtractString(payload_json, 'attributes', 'ticket_id')) AS tickets
FROM timeline_current
WHERE channel = 'support'
GROUP BY customer_id
HAVING length(contact_channels) > 1
ORDER BY tickets DESC, customer_id
