"""What an agent types into the customer search, read in the forms the hub stores identifiers in."""
from __future__ import annotations

from console.customers import search_terms


def test_an_email_is_found_as_the_worker_normalises_it():
    search = search_terms("  Alice.Martin@Example.COM ", "FR")
    assert search.identifiers == ["email:alice.martin@example.com"] and search.handle == ""


def test_a_phone_said_aloud_or_typed_with_its_country_code_gives_one_form():
    assert search_terms("06 12 34 56 78", "FR").identifiers == ["phone:+33612345678"]
    assert search_terms("+33 6 12 34 56 78", "FR").identifiers == ["phone:+33612345678"]
    assert search_terms("0690 12 34 56", "FR", ("GP", "MQ")).identifiers == ["phone:+590690123456"]


def test_a_bare_word_may_be_a_loyalty_id_an_account_a_handle_an_order_or_a_customer_id():
    search = search_terms("lc-0042", "FR")
    assert search.identifiers == ["loyalty_id:LC-0042", "web_account:LC-0042"]
    assert search.handle == "lc-0042" and search.term == "lc-0042"   # the term: an order number or a customer id
    assert search_terms("@Pauline_M", "FR").handle == "pauline_m"


def test_kind_and_value_name_one_identifier_and_a_handle_may_name_its_platform():
    assert search_terms("loyalty_id:lc-7", "FR").identifiers == ["loyalty_id:LC-7"]
    assert search_terms("social_handle:facebook:@Pauline", "FR").identifiers == ["social_handle:facebook:pauline"]
    unknown_platform = search_terms("social_handle:pauline", "FR")
    assert unknown_platform.identifiers == [] and unknown_platform.handle == "pauline"
    assert search_terms("phone:not a number", "FR").identifiers == []
