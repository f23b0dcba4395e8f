-- Customer service: customers who contacted support on several channels (phone, email, Facebook, chat), with their tickets.
-- From the support contacts rollup (support_contacts: a row per customer, channel and ticket), under the ids customers resolve to now.
SELECT
    if(m.current_id = '', d.customer_id, m.current_id) AS customer_id,
    arraySort(groupUniqArray(d.contact_channel)) AS contact_channels,
    uniqExact(d.ticket_id) AS tickets
FROM support_contacts AS d
LEFT JOIN current_ids AS m
    ON d.customer_id = m.customer_id
WHERE d.customer_id != ''   -- contacts that name nobody are nobody's
GROUP BY customer_id
HAVING length(contact_channels) > 1
ORDER BY tickets DESC, customer_id
