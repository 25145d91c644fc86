from django.contrib import admin

from journy_django.admin import sync_to_journy

from .models import Organization


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    actions = [sync_to_journy]
