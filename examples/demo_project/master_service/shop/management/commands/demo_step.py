"""``manage.py demo_step create|update|delete``: the changes the scripted demo makes.

Plain ORM code: saving or deleting a master model is all it takes to publish a message.

``manage.py demo_step --stdin`` keeps one master process running for the demo runner: it
reads one command per line (``create``, ``update``, ``delete`` or any management command
line such as ``cqrs_sync --cqrs-id product --filter {}``, as a JSON list), runs it, and
prints ``@@done`` (or ``@@failed``). That saves starting Django for every step.
"""

import json
import sys
import traceback
from decimal import Decimal

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from shop.models import Category, Customer, Product


class Command(BaseCommand):
    help = 'Create, update or delete shop data (the steps of the scripted demo).'

    def add_arguments(self, parser):
        parser.add_argument('step', nargs='?', choices=['create', 'update', 'delete'])
        parser.add_argument('--stdin', action='store_true', help='Read commands from stdin')

    def handle(self, *args, step=None, stdin=False, **options):
        if stdin:
            self.serve()
        elif step:
            getattr(self, step)()
        else:
            raise CommandError('Name a step (create, update, delete) or use --stdin.')

    def serve(self) -> None:
        for line in sys.stdin:
            command = json.loads(line)
            try:
                if command[0] in ('create', 'update', 'delete'):
                    getattr(self, command[0])()
                else:
                    call_command(*command, stdout=self.stdout)
            except Exception:
                self.stdout.write(traceback.format_exc())
                self.stdout.write('@@failed')
            else:
                self.stdout.write('@@done')
            self.stdout.flush()

    def say(self, text: str) -> None:
        self.stdout.write(f'  master: {text}')

    def create(self) -> None:
        # One transaction: the messages leave when it commits, in the order of the saves.
        with transaction.atomic():
            books = Category.objects.create(name='Books')
            games = Category.objects.create(name='Games')
            Product.objects.create(name='Dune', price=Decimal('9.99'), category=books)
            Product.objects.create(name='Chess', price=Decimal('25.00'), category=games)
            Product.objects.create(name='Catan', price=Decimal('42.50'), category=games)
            Customer.objects.create(first_name='Ada', last_name='Lovelace', email='ada@example.org')
            Customer.objects.create(
                first_name='Alan', last_name='Turing', email='alan@bletchley.example'
            )
        self.say('created 2 categories, 3 products, 2 customers')

    def update(self) -> None:
        dune = Product.objects.get(name='Dune')
        dune.price = Decimal('7.49')
        dune.save()  # tracked field: the replica receives the old price too
        self.say('Dune costs 7.49 now (was 9.99)')
        ada = Customer.objects.get(first_name='Ada')
        ada.email = 'ada@analytical-engine.example'
        ada.save()
        self.say("Ada's e-mail moved to analytical-engine.example")
        games = Category.objects.get(name='Games')
        games.name = 'Board games'
        games.save()
        self.say("category 'Games' renamed 'Board games'")

    def delete(self) -> None:
        Product.objects.get(name='Chess').delete()
        self.say('deleted product Chess')
        Customer.objects.get(first_name='Alan').delete()
        self.say('deleted customer Alan Turing')
