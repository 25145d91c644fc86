from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from journy_django.admin import sync_to_journy

from .models import Organization


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "plan")
    filter_horizontal = ("members",)
    actions = (sync_to_journy,)


admin.site.unregister(get_user_model())


@admin.register(get_user_model())
class JournyUserAdmin(UserAdmin):
    actions = (*UserAdmin.actions, sync_to_journy)
