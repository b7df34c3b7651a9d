"""Customers with a few months of orders, and a staff user to log in with (idempotent)."""

from __future__ import annotations

import random
from datetime import date
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from invoices.models import Customer, Order

USERNAME, PASSWORD = "admin", "cq-demo"
CUSTOMERS = [
    ("Acme Corporation", "1 Road Runner Way\nPhoenix, AZ"),
    ("Bluth Company", "Sudden Valley\nNewport Beach, CA"),
    ("Cyberdyne Systems", "18144 El Camino Real\nSunnyvale, CA"),
    ("Duff Beer", "1 Brewery Lane\nSpringfield"),
    ("Globex", "Cypress Creek\nOregon"),
    ("Hooli", "1 Hooli Way\nPalo Alto, CA"),
    ("Initech", ""),  # no billing address: its invoice fails, on purpose
    ("Massive Dynamic", "1 Dynamic Plaza\nNew York, NY"),
    ("Pied Piper", "5230 Newell Road\nPalo Alto, CA"),
    ("Soylent", "3 Green Street\nNew York, NY"),
    ("Umbrella", "545 S Birdneck Rd\nRaccoon City"),
    ("Wonka Industries", "1 Chocolate Avenue\nLondon"),
]
ITEMS = [("Widget", "12.50"), ("Gadget", "49.00"), ("Support hour", "95.00"), ("Licence", "300.00"),
         ("Sprocket", "3.20")]


def months_back(today: date, count: int) -> list[date]:
    first = today.replace(day=1)
    months = []
    for _ in range(count):
        months.append(first)
        first = (first.replace(day=1) - date.resolution).replace(day=1)
    return months


class Command(BaseCommand):
    help = "Seed the demo: customers, three months of orders, and a staff user."

    def handle(self, *args, **options):
        chance = random.Random(42)  # the same data on every machine
        if not Customer.objects.exists():
            for name, address in CUSTOMERS:
                customer = Customer.objects.create(
                    name=name, billing_address=address, email=f"accounts@{name.split()[0].lower()}.example")
                for month in months_back(date.today(), 4)[1:]:  # the last three whole months
                    for _ in range(chance.randint(2, 6)):
                        item, price = chance.choice(ITEMS)
                        Order.objects.create(customer=customer, placed=month.replace(day=chance.randint(1, 28)),
                                             description=item, quantity=chance.randint(1, 20),
                                             unit_price=Decimal(price))
        User = get_user_model()
        if not User.objects.filter(username=USERNAME).exists():
            User.objects.create_superuser(USERNAME, "admin@example.com", PASSWORD)
        self.stdout.write(f"Log in as {USERNAME} / {PASSWORD}")
