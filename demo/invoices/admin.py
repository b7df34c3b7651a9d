"""The demo's admin: where a person gives Initech its missing billing address before retrying."""

from django.contrib import admin

from .models import Customer


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["name", "email", "billing_address"]
    search_fields = ["name"]
